# Two commands on a fresh machine: `make demo` (install, train and evaluate the digits demo)
# and `make test` (install, run the test suite). Both share one virtual environment.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_CONFIG := configs/demo/twins-pcpvt-tiny_1xb64_digits.py
DEMO_WORK_DIR := work_dirs/demo

.PHONY: install demo test test-slow lint export-check export-speed bench bench-classifiers

install: $(VENV)/.installed

$(VENV)/.installed: tools/install.sh setup.py requirements/*.txt
	VENV=$(VENV) bash tools/install.sh
	touch $@

demo: install
	$(PY) tools/dataset_converters/digits_to_imagenet.py data/digits
	$(PY) tools/train.py $(DEMO_CONFIG) --work-dir $(DEMO_WORK_DIR) --resume
	$(PY) tools/test.py $(DEMO_CONFIG) "$$(cat $(DEMO_WORK_DIR)/last_checkpoint)" --work-dir $(DEMO_WORK_DIR)

# Kernel paths users meet (README "Tests"): the tests marked kernel_path (parity, contract, linear
# kernels) run again under each. oneDNN and MKL read these variables when torch loads them.
KERNEL_PATH_AVX2 := ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
KERNEL_PATH_ATEN := VITZOO_ONEDNN_LINEAR=0
KERNEL_PATH_ONE_THREAD := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# The whole suite in a random order (pytest-randomly prints the seed), then the kernel_path tests
# with oneDNN and MKL capped to AVX2.
test: install
	$(PY) -m pytest tests -m "not slow"
	$(KERNEL_PATH_AVX2) $(PY) -m pytest tests -m "kernel_path and not slow"

# Tests too slow for the 15-minute CI budget (documented in README.md), and the kernel_path tests
# on ATen's kernels alone and on one thread.
test-slow: install
	$(PY) -m pytest tests -m slow
	$(KERNEL_PATH_ATEN) $(PY) -m pytest tests -m kernel_path
	$(KERNEL_PATH_ONE_THREAD) $(PY) -m pytest tests -m kernel_path

# ruff (ruff.toml): pycodestyle, pyflakes and import order; CI runs it.
lint: install
	$(VENV)/bin/ruff check .

# Export every model of the index to ONNX and verify it (hours on 2 cores; resumable):
# writes tools/deployment/export_check.json, the source of the README's export results.
export-check: install
	$(PY) tools/deployment/export_check.py
	$(PY) tools/deployment/export_check.py --readme

# The README's onnxruntime vs PyTorch eager table: one small classifier per family, batch 8, 224x224,
# 2 threads, the two alternating in one process (about 15 minutes on 2 cores).
EXPORT_SPEED_MODELS := twins-pcpvt-small_3rdparty_8xb128_in1k twins-svt-small_3rdparty_8xb128_in1k \
	davit-tiny_3rdparty_in1k pit-s_3rdparty_8xb128_in1k lvt_3rdparty_8xb128_in1k
export-speed: install
	$(PY) tools/analysis_tools/benchmark.py $(EXPORT_SPEED_MODELS) --backend onnxruntime --device cpu --threads 2 \
		--batch-size 8 --shape 224 --warmup 2 --iters 4 --rounds 3 --json tools/deployment/onnxruntime_speed.json
	$(PY) tools/deployment/export_check.py --readme

# The README's Speed section (tools/analysis_tools/speed.json, docs/speed_sweep.png): every classifier
# variant vs timm and vs itself on ATen's kernels (batch 8, 224, 2 threads, inference and training step;
# with_cp memory for the small ones), once as the machine is and once with oneDNN and MKL capped to AVX2
# (one table each); SegFormer at 512x512 and Panoptic FPN at 800x1344 for one variant per family, a
# shape sweep (batch 1 inference, one model per family) and torch.compile for four families. About three
# hours on 2 cores; make bench-classifiers runs the two classifier tables alone (about 1.5 hours).
BENCH_SMALL := twins-pcpvt-small_3rdparty_8xb128_in1k twins-svt-small_3rdparty_8xb128_in1k \
	davit-tiny_3rdparty_in1k pit-ti_3rdparty_8xb128_in1k pit-xs_3rdparty_8xb128_in1k pit-s_3rdparty_8xb128_in1k \
	lvt_3rdparty_8xb128_in1k
BENCH_LARGE := twins-pcpvt-base_3rdparty_8xb128_in1k twins-pcpvt-large_3rdparty_16xb64_in1k \
	twins-svt-base_3rdparty_8xb128_in1k twins-svt-large_3rdparty_16xb64_in1k davit-small_3rdparty_in1k \
	davit-base_3rdparty_in1k pit-b_3rdparty_8xb128_in1k pit-ti-distilled_3rdparty_8xb128_in1k \
	pit-xs-distilled_3rdparty_8xb128_in1k pit-s-distilled_3rdparty_8xb128_in1k pit-b-distilled_3rdparty_8xb128_in1k
BENCH_SEG := segformer_twins-pcpvt-s_8xb2-160k_ade20k-512x512 segformer_twins-svt-s_8xb2-160k_ade20k-512x512 \
	segformer_davit-t_8xb2-160k_ade20k-512x512 segformer_pit-ti_8xb2-160k_ade20k-512x512 \
	segformer_lvt_8xb2-160k_ade20k-512x512
BENCH_PANOPTIC := panoptic-fpn_twins-pcpvt-s_fpn_1x_coco panoptic-fpn_twins-svt-s_fpn_1x_coco \
	panoptic-fpn_davit-t_fpn_1x_coco panoptic-fpn_pit-ti_fpn_1x_coco panoptic-fpn_lvt_fpn_1x_coco
BENCH_SWEEP := twins-pcpvt-small_3rdparty_8xb128_in1k davit-tiny_3rdparty_in1k pit-ti_3rdparty_8xb128_in1k \
	lvt_3rdparty_8xb128_in1k
BENCH_COMPILE := twins-pcpvt-small_3rdparty_8xb128_in1k twins-svt-small_3rdparty_8xb128_in1k \
	davit-tiny_3rdparty_in1k pit-ti_3rdparty_8xb128_in1k
BENCH_DIR := work_dirs/bench
BENCH := $(PY) tools/analysis_tools/benchmark.py --device cpu --threads 2

BENCH_CLASSIFIERS = $(BENCH) $(1) --compare timm aten --batch-size 8 --shape 224 --warmup 2 --iters 2 --rounds 5

bench-classifiers: install
	mkdir -p $(BENCH_DIR)
	$(call BENCH_CLASSIFIERS,$(BENCH_SMALL)) --with-cp-memory --json $(BENCH_DIR)/small.json
	$(call BENCH_CLASSIFIERS,$(BENCH_LARGE)) --json $(BENCH_DIR)/large.json
	$(KERNEL_PATH_AVX2) $(call BENCH_CLASSIFIERS,$(BENCH_SMALL) $(BENCH_LARGE)) --json $(BENCH_DIR)/avx2.json
	$(PY) tools/analysis_tools/speed_table.py --merge $(BENCH_DIR)/small.json $(BENCH_DIR)/large.json \
		$(BENCH_DIR)/avx2.json
	$(PY) tools/analysis_tools/speed_table.py

bench: bench-classifiers
	$(BENCH) $(BENCH_SEG) --batch-size 2 --shape 512 --warmup 1 --iters 2 --rounds 2 --json $(BENCH_DIR)/seg.json
	$(BENCH) $(BENCH_PANOPTIC) --batch-size 1 --shape 800 1344 --warmup 1 --iters 2 --rounds 2 \
		--json $(BENCH_DIR)/panoptic.json
	$(BENCH) $(BENCH_SWEEP) --mode infer --batch-size 1 --sweep-shape 224 384 512 --warmup 1 --iters 3 \
		--rounds 2 --json $(BENCH_DIR)/sweep.json --plot docs/speed_sweep.png
	$(BENCH) $(BENCH_COMPILE) --compare timm --compile --batch-size 8 --shape 224 --warmup 2 --iters 3 \
		--rounds 3 --json $(BENCH_DIR)/compile.json
	$(PY) tools/analysis_tools/speed_table.py --merge $(BENCH_DIR)/small.json $(BENCH_DIR)/large.json \
		$(BENCH_DIR)/avx2.json $(BENCH_DIR)/seg.json $(BENCH_DIR)/panoptic.json $(BENCH_DIR)/sweep.json \
		$(BENCH_DIR)/compile.json
	$(PY) tools/analysis_tools/speed_table.py
