"""A local stand-in for Zoom's and Google's OAuth and meeting APIs, with fault injection."""
