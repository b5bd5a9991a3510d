r"""Pytest configuration: the --device option, seeds and the doctest namespace."""

from collections.abc import Iterator

import pytest
import torch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="torch device to test on (cpu, cuda)")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    device = torch.device(request.config.getoption("--device"))
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.fail("--device cuda was given but CUDA is not available")
    return device


def pytest_configure(config: pytest.Config) -> None:
    # the suite's tensors are small: one thread avoids oversubscribing shared cores
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def torch_seed() -> Iterator[None]:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


@pytest.fixture(autouse=True)
def doctest_imports(doctest_namespace: dict) -> None:
    doctest_namespace["torch"] = torch
