"""The checked exercises of each chapter: a `check_*` per exercise (prints a precise hint, never raises) and
the kit's reference answer, which `lorakit.check.exercise` hands to the cells below when a check fails.

- `lorakit.exercises.diffusion`: notebook 01 (noising, the noise-prediction loss, classifier-free guidance);
- `lorakit.exercises.lora`: notebook 02 (the LoRA layer, merging, adding LoRA over a model);
- `lorakit.exercises.finetuning`: notebook 03 (parameter and optimizer-state counts, the effective rank, a LoRA
  extracted from ΔW by truncated SVD);
- `lorakit.exercises.collapse`: notebook 04 (the Vendi score, early stopping's rule, the prior-preservation loss);
- `lorakit.exercises.mixing`: notebook 05 (the exact and the factor-space mix, an adapter's weight read back);
- `lorakit.exercises.files`: notebook 06 (a file's ranks and size, the scale a file applies, kohya keys with alpha);
- `lorakit.exercises.control`: notebook 07 (a slider's prompts, the slider's target, ESD's target).
"""
