"""`relink soak`: many tutors switching under faults, then every invariant checked."""
