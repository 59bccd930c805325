"""relink: move a tutor's future sessions to a new video provider on switch."""
