"""A LIST answer decoded one item at a time from a stream, whatever the chunk boundaries."""

from __future__ import annotations

import json

import pytest

from reconciler.cluster import _StreamedList

ANSWER = {
    "kind": "ServiceList", "apiVersion": "v1",
    "items": [
        {"metadata": {"name": f"svc-{i}", "labels": {"note": "naïve ✓ \"quoted\" \\ back"}},
         "spec": {"ports": [{"port": 8000 + i, "weight": 1.5e3, "on": True, "off": None}]}}
        for i in range(5)
    ],
    "metadata": {"resourceVersion": "12345", "continue": "eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ"},
}


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 2, 7, 64, 1 << 16])
@pytest.mark.parametrize("indent", [None, 2])
def test_every_item_and_the_list_metadata_come_out_whatever_the_chunks(size: int, indent: int | None) -> None:
    data = json.dumps(ANSWER, indent=indent, ensure_ascii=False).encode()
    page = _StreamedList(chunks(data, size))
    assert list(page.items()) == ANSWER["items"]
    assert page.metadata["metadata"]["continue"] == ANSWER["metadata"]["continue"]
    assert page.metadata["kind"] == "ServiceList"


def test_an_empty_list() -> None:
    page = _StreamedList([b'{"kind":"PodList","metadata":{},"items":[]}'])
    assert list(page.items()) == []
    assert page.metadata == {"kind": "PodList", "metadata": {}}


@pytest.mark.parametrize("body", [b'{"items":[{"a":1},', b'{"items":[{"a":1}}', b"<html>", b""])
def test_a_cut_or_foreign_answer_is_an_error_not_a_shorter_list(body: bytes) -> None:
    with pytest.raises(ValueError):
        list(_StreamedList(chunks(body, 3)).items())
