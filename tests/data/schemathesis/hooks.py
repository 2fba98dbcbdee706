"""Checks that schemathesis cannot make from the document alone, loaded through SCHEMATHESIS_HOOKS.

An NDJSON answer (a chat turn, streamed) is one stream-json event per line: every line must
match the documented event schema, the first must be `system`/`init` and the last the one
`result` of the turn.
"""

import json

import jsonschema_rs
import schemathesis

_validators = {}


def _validator(document, reference):
    key = (id(document), reference)
    if key not in _validators:
        root = {"$ref": reference, "components": document.get("components", {})}
        _validators[key] = jsonschema_rs.Draft202012Validator(root)
    return _validators[key]


def _line_schema(case, status):
    """The `$ref` of the documented NDJSON line schema of this answer, if there is one."""
    responses = case.operation.definition.raw.get("responses", {})
    media = responses.get(str(status), {}).get("content", {}).get("application/x-ndjson")
    if not media:
        return None
    return media.get("schema", {}).get("$ref")


@schemathesis.check
def ndjson_conformance(ctx, response, case):
    content_type = response.headers.get("content-type", [""])[0]
    if not content_type.startswith("application/x-ndjson"):
        return None
    reference = _line_schema(case, response.status_code)
    if reference is None:
        raise AssertionError(f"undocumented NDJSON answer with status {response.status_code}")
    validator = _validator(case.operation.schema.raw_schema, reference)
    lines = [line for line in response.content.decode("utf-8").split("\n") if line]
    if not lines:
        raise AssertionError("an NDJSON answer with no line")
    events = []
    for number, line in enumerate(lines, start=1):
        try:
            event = json.loads(line)
        except ValueError as err:
            raise AssertionError(f"line {number} is not JSON ({err}): {line[:200]}") from None
        errors = [e.message for e in validator.iter_errors(event)]
        if errors:
            raise AssertionError(f"line {number} does not match {reference}: {errors[0]}: {line[:200]}")
        events.append(event)
    first, last = events[0], events[-1]
    if (first.get("type"), first.get("subtype")) != ("system", "init"):
        raise AssertionError(f"the first line is not system/init: {lines[0][:200]}")
    if last.get("type") != "result" or sum(e.get("type") == "result" for e in events) != 1:
        raise AssertionError(f"the stream does not end with exactly one result: {lines[-1][:200]}")
    return None
