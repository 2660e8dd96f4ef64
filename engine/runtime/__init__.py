"""Running containers: runc, conmon, the lifecycle, reconcile at start, exit files, exec sessions,
logs."""
