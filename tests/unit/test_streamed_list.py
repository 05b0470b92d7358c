"""A LIST answer decoded one item at a time from a stream, whatever the chunk boundaries."""

from __future__ import annotations

import json

import pytest

from reconciler.listing import StreamedList

ANSWER = {
    "kind": "ServiceList", "apiVersion": "v1",
    "items": [
        {"metadata": {"name": f"svc-{i}", "labels": {"note": 'naïve ✓ "quoted" \\ back },{"metadata":'}},
         "spec": {"ports": [{"port": 8000 + i, "weight": 1.5e3, "on": True, "off": None}],
                  # Objects named like an item's start, nested in an item: never taken for a boundary.
                  "templates": [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}]}}
        for i in range(40)
    ],
    "metadata": {"resourceVersion": "12345", "continue": "eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ"},
}


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 7, 64, 1000, 1 << 20])
@pytest.mark.parametrize("compact", [True, False])  # the apiserver's compact JSON, and any other spacing
def test_every_item_and_the_list_metadata_come_out_whatever_the_chunks(size: int, compact: bool) -> None:
    data = json.dumps(ANSWER, separators=(",", ":") if compact else None, indent=None if compact else 2,
                      ensure_ascii=False).encode()
    page = StreamedList(chunks(data, size))
    assert list(page.items()) == ANSWER["items"]
    assert page.metadata["metadata"]["continue"] == ANSWER["metadata"]["continue"]
    assert page.metadata["kind"] == "ServiceList"


def test_an_empty_list() -> None:
    page = StreamedList([b'{"kind":"PodList","metadata":{},"items":[]}'])
    assert list(page.items()) == []
    assert page.metadata == {"kind": "PodList", "metadata": {}}


@pytest.mark.parametrize("body", [b'{"items":[{"a":1},', b'{"items":[{"a":1}}', b"<html>", b""])
def test_a_cut_or_foreign_answer_is_an_error_not_a_shorter_list(body: bytes) -> None:
    with pytest.raises(ValueError):
        list(StreamedList(chunks(body, 3)).items())


def test_items_share_their_key_strings_as_a_whole_page_decoded_at_once_does() -> None:
    # One copy of "metadata", "name", ... for the items of a chunk, not one per object: memory.
    items = [{"metadata": {"name": f"d{i}", "labels": {"app": "x"}}, "spec": {"replicas": 1}} for i in range(50)]
    data = json.dumps({"kind": "DeploymentList", "metadata": {}, "items": items}, separators=(",", ":")).encode()
    decoded = list(StreamedList([data]).items())
    assert decoded == items
    first, last = decoded[0]["metadata"], decoded[-2]["metadata"]
    assert next(iter(first)) is next(iter(last))
