"""`relink bench`: the performance harness. Each part writes its own key."""
