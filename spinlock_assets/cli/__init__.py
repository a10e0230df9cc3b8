"""The command line (`spinlock-assets info | replay | verify`): works on a finished data root or
dataset.h5 alone, with numpy, h5py and torch; it never imports Dagster."""
