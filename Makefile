# `make demo` and `make test` each set up a local virtual environment on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-older-sdks clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m hilt demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The OpenAI tests again on older SDK releases, each in a virtual environment of its own: the oldest release
# hilt records (the floor in hilt/providers/__init__.py and pyproject.toml) and the last 2.x. CI runs it too.
OLDER_OPENAI := 1.92.0 2.54.0

test-older-sdks:
	for version in $(OLDER_OPENAI); do \
	    $(PYTHON) -m venv $(VENV)-openai-$$version && \
	    $(VENV)-openai-$$version/bin/python -m pip install --quiet -e ".[dev]" "openai==$$version" && \
	    $(VENV)-openai-$$version/bin/python -m pytest -q -p no:cacheprovider tests/test_openai_*.py || exit 1; \
	done

clean:
	rm -rf $(VENV) $(VENV)-openai-* logs .pytest_cache
