"""The PyPI OpenFeature SDK with the OFREP provider, evaluating through the edge, must give
flag-core's native answers, as the control plane's own OFREP endpoint computes them."""

import json
import pathlib
import subprocess

import pytest
import requests
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext

TESTS = pathlib.Path(__file__).resolve().parent.parent
COUNTRIES = ["SE", "NO", "DE", "US", "BR", "JP"]
PLANS = ["free", "pro", "enterprise"]
VERSIONS = ["2.9.1", "3.0.0", "3.0.1", "3.14.1", "4.0.0-beta.2"]


def contexts(count):
    """The same contexts as tests/e2e/fixtures.mjs: every 50th has no targeting key."""
    for i in range(count):
        context = {"country": COUNTRIES[i % 6], "plan": PLANS[(i * 7) % 3], "appVersion": VERSIONS[(i * 3) % 5]}
        if i % 50 != 0:
            context["targetingKey"] = f"user-{i}"
        yield context


@pytest.fixture(scope="module")
def stack():
    process = subprocess.Popen(
        ["node", str(TESTS / "stack.mjs")],
        env={**__import__("os").environ, "STACK_JSON": "1"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    assert line, "the stack did not start"
    yield json.loads(line)
    process.stdin.close()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def client(stack):
    provider = OFREPProvider(stack["edge"], headers_factory=lambda: {"X-API-Key": stack["appToken"]})
    api.set_provider(provider)
    yield api.get_client()
    api.shutdown()


def native(stack, flag, context):
    url = f"{stack['controlPlane']}/api/v1/environments/production/ofrep/v1/evaluate/flags/{flag}"
    response = requests.post(url, json={"context": context}, headers={"Authorization": f"Bearer {stack['appToken']}"}, timeout=10)
    return response.json()


FLAGS = [
    ("checkout-v2", "get_boolean_details", False),
    ("banner", "get_string_details", "default"),
    ("search-limit", "get_integer_details", -1),
    ("new-checkout-theme", "get_object_details", {}),
]


def test_the_python_provider_through_the_edge_gives_flag_cores_answers(stack, client):
    evaluations = 0
    for context in contexts(1000):
        attributes = {k: v for k, v in context.items() if k != "targetingKey"}
        evaluation_context = EvaluationContext(context.get("targetingKey"), attributes)
        for flag, getter, fallback in FLAGS:
            details = getattr(client, getter)(flag, fallback, evaluation_context)
            expected = native(stack, flag, context)
            where = f"{flag} {context}"
            if "errorCode" in expected:
                assert details.error_code is not None and details.error_code.value == expected["errorCode"], where
                assert details.value == fallback, where
            else:
                assert details.value == expected["value"], where
                assert details.variant == expected["variant"], where
                assert details.reason.value == expected["reason"], where
                assert dict(details.flag_metadata) == expected.get("metadata", {}), where
            evaluations += 1
    assert evaluations == 4000
