"""Jobs: the job model, playbooks and the task graph that runs on the worker."""
