"""The demo seed: tutors, students and sessions for the devstack."""
