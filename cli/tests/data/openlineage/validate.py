"""Validates OpenLineage events (one JSON object per line of the file given)
against the vendored OpenLineage JSON schemas in this folder: each event as a
whole against OpenLineage.json, and each facet it carries against the schema
of that facet. Prints one line per invalid event and exits 1 if any is.

Used by cli/tests/it/lineage.rs; needs the `jsonschema` package
(scripts/test.sh provides it)."""

import json
import pathlib
import sys

import jsonschema
from referencing import Registry, Resource

HERE = pathlib.Path(__file__).parent
SCHEMAS = {p.name: json.loads(p.read_text()) for p in HERE.glob("*.json")}
REGISTRY = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema)) for schema in SCHEMAS.values()
)
# facet name in an event -> the file whose top-level "properties" define it
FACET_FILES = {
    name: file
    for file, schema in SCHEMAS.items()
    for name in schema.get("properties", {})
    if file != "OpenLineage.json"
}


def validator(schema):
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, registry=REGISTRY, format_checker=cls.FORMAT_CHECKER)


EVENT = validator({"$ref": SCHEMAS["OpenLineage.json"]["$id"] + "#/$defs/RunEvent"})


def facets_of(event):
    yield from event.get("run", {}).get("facets", {}).items()
    yield from event.get("job", {}).get("facets", {}).items()
    for dataset in event.get("inputs", []) + event.get("outputs", []):
        yield from dataset.get("facets", {}).items()


def problems(event):
    for error in EVENT.iter_errors(event):
        yield f"event: {error.message} at {list(error.absolute_path)}"
    for name, facet in facets_of(event):
        file = FACET_FILES.get(name)
        if file is None:
            yield f"facet {name}: no vendored schema to check it against"
            continue
        schema = SCHEMAS[file]
        check = validator({"$ref": schema["$id"] + "#/properties/" + name})
        for error in check.iter_errors(facet):
            yield f"facet {name}: {error.message} at {list(error.absolute_path)}"


def main(path):
    invalid = 0
    events = 0
    for number, line in enumerate(pathlib.Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        events += 1
        found = list(problems(json.loads(line)))
        if found:
            invalid += 1
            print(f"event {number}: " + "; ".join(found))
    print(f"{events} events, {invalid} invalid")
    return 1 if invalid or not events else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
