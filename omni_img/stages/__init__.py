"""What defines each training stage and loads a finished one.

Per stage (tokenizer, generator, rolling): how its model is built from a config, its
loss, its train step's parts and how a trained workdir is read back. The trainers
(``omni_img.trainers``) add the training loop and evaluation on top; evaluation,
export, sampling and serving read trained runs through ``omni_img.stages.run`` and
never need the trainers. This package imports neither the trainers nor the evals.
"""
