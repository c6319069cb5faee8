# mmdaq: the two set-up commands of the README are `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -q

.PHONY: install demo demo-full demo-video test data clean help

help:
	@echo "make demo        install into $(VENV), then FP32 vs DAQ Faster R-CNN on the synthetic shapes"
	@echo "                 (both continue one short FP32 warm start; prints both mAPs and the time ratio)"
	@echo "make demo-full   the same, both trained from scratch (two 500-iteration trainings)"
	@echo "make test        install into $(VENV), then run the test suite"
	@echo "make demo-video  install, then train TSN on the synthetic clips and print top-1"
	@echo "make install     only install (idempotent; mmcv wheel cached in ~/.cache/mmdaq)"
	@echo "make data        only generate the synthetic datasets under data/"

install:
	bash tools/install.sh

demo: install
	$(PY) tools/demo.py detection

demo-full: install
	$(PY) tools/demo.py detection --full

demo-video: install
	$(PY) tools/demo.py video

data: install
	$(PY) tools/data/generate_synthetic.py detection --out data/synthetic_shapes
	$(PY) tools/data/generate_synthetic.py video --out data/synthetic_clips

test: install
	$(PY) -m pytest tests $(PYTEST_ARGS)

clean:
	rm -rf build work_dirs .pytest_cache mmdaq/_ext*.so
