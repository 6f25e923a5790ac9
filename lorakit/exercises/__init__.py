"""The checked exercises of each chapter: a `check_*` per exercise (prints a precise hint, never raises) and
the kit's reference answer, which `lorakit.check.exercise` hands to the cells below when a check fails.

- `lorakit.exercises.diffusion`: notebook 01 (noising, the noise-prediction loss, classifier-free guidance);
- `lorakit.exercises.lora`: notebook 02 (the LoRA layer, merging, adding LoRA over a model);
- `lorakit.exercises.control`: notebook 07 (a slider's prompts, the slider's target, ESD's target).
"""
