# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_WHEEL := $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl)
XVFB_PKGS := xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 \
	libxcb-render-util0 libxcb-randr0 libxcb-shape0 libxcb-xfixes0 libxkbcommon-x11-0 \
	libxcb-cursor0 libgl1 libegl1 libfontconfig1 libdbus-1-3

.PHONY: install display demo test lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Idempotent: a second run only checks. Torch first, so that the CPU wheel lying on this kind of
# machine is used instead of a multi-GB CUDA build (GUIDE §6); elsewhere pip picks as usual.
install: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || \
	  $(PIP) install -q $(if $(TORCH_WHEEL),"$(TORCH_WHEEL)","torch>=2.1,<2.14")
	$(PIP) install -q -e ".[pyqt6,testing,dicom]"

# The test display: Xvfb and the xcb libraries Qt needs (Qt 6 also xcb-cursor), via apt when
# root and missing.
display:
	@if ! command -v Xvfb >/dev/null 2>&1 || ! ldconfig -p | grep -q libxcb-icccm.so.4 \
	     || ! ldconfig -p | grep -q libxcb-cursor.so.0; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(XVFB_PKGS); \
	  else \
	    echo "Xvfb/xcb libraries missing: sudo apt-get install $(XVFB_PKGS)"; exit 1; \
	  fi; \
	fi

# DEMO_ARGS, e.g. "--sample left_atrium" or "--screenshot demo.png" (saves and quits)
DEMO_ARGS ?=
demo: install
	$(PY) -m napari_semiseg $(DEMO_ARGS)

test: install display
	$(PY) -m ruff check napari_semiseg training tests
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check napari_semiseg training tests

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
