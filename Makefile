# The two commands of the README: `make demo` and `make test`. Both install what they need first
# (Debian packages as root, then a virtual environment in .venv with the project installed editable).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

# Real clients and tools that the system tests and the demo start; none of them is written here.
DEB_PACKAGES := iproute2 nftables isc-dhcp-client udhcpc dhcpcd-base dnsutils arping iperf3 \
                iputils-ping tcpdump ethtool procps wireguard-go wireguard-tools \
                coturn conntrack

.PHONY: test demo deps venv lint typecheck unit clean

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q 'install ok installed' || echo $$p; done); \
	if ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then missing="$$missing python3-venv"; fi; \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	        --no-install-recommends $$missing >/dev/null; \
	fi

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/.installed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

test: deps venv lint typecheck
	$(BIN)/pytest

demo: deps venv
	$(BIN)/python -m ipop.demo

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
