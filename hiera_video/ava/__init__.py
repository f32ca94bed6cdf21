"""AVA action detection: annotation files, keyframe dataset, RoI head, training, evaluation and the official metric."""
