"""The steps the stages chain: each finds or computes one kind of artifact (see `produce`), from the task data
(`task_data`), the models (`models`), training (`training`), scoring (`scoring`) and evaluation
(`evaluation`). What identifies each artifact is decided in `percontrast_cli.store.identity`."""
