"""Running containers: runc (the command line, thin), conmon (the monitor that outlives the
engine), lifecycle (start, stop, kill, pause, exec; the states), reconcile (after a restart),
exits (the exit-file watcher), execs (exec sessions), logs (k8s-file), nodeinfo.
Imports spec, files, storage and below.
"""
