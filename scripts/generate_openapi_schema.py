"""Write `.cog/openapi_schema.json`: the input contract the Cog runtime enforces.

coglet (the Cog HTTP server) validates every request's `input` against
`components.schemas.Input` of `.cog/openapi_schema.json`, read relative to its working
directory, and answers 422 when it does not match. `cog build` (the Go CLI) writes that file;
where the CLI is not used (local servers, the tests) nothing writes it, and coglet then accepts
any input at all. This script builds the same document from the runner's own signature, read with
the pinned cog SDK's inspector (`cog._inspector`, private API of cog 0.23.1), in the shape the
CLI gives it: one property per `run()` argument with `x-order`, `title`, `default`,
`minimum`/`maximum` and `description`; `choices` as `allOf: [{$ref}]` to an enum schema named
after the argument (coglet inlines those refs before validating).

    python scripts/generate_openapi_schema.py            # (re)write the file
    python scripts/generate_openapi_schema.py --check    # exit 1 if the committed file is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import MISSING, Field
from pathlib import Path
from typing import Any

from cog import _adt
from cog._inspector import create_predictor

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / ".cog" / "openapi_schema.json"
PREDICTOR_MODULE = "predict"
PREDICTOR_CLASS = "Runner"
SCHEMA_REF = "#/components/schemas/"
PREDICTION_STATUSES = ["starting", "processing", "succeeded", "canceled", "failed"]


def title_of(name: str) -> str:
    """`chunk_size` -> `Chunk Size`, the way Cog titles inputs."""
    return name.replace("_", " ").title()


def load_predictor():
    """The cog SDK's description of `predict.py:Runner` (a `cog._adt.PredictorInfo`)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return create_predictor(PREDICTOR_MODULE, PREDICTOR_CLASS)


def default_of(field) -> Any:
    """The JSON value of an input's default, or MISSING when the input has none."""
    default = field.default
    if isinstance(default, Field):
        if default.default_factory is not MISSING:
            raise ValueError(f"input {field.name}: default_factory cannot be written into a schema")
        default = None if default.default is MISSING else default.default
    if default is None:
        return MISSING
    return field.type.json_encode(field.type.normalize(default))


def input_property(field) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One `run()` argument -> (its Input property, its enum schema or None)."""
    prop: dict[str, Any] = {"x-order": field.order}
    enum_schema = None
    if field.choices is not None:
        enum_schema = {"title": field.name, "description": "An enumeration.", "enum": list(field.choices)}
        enum_schema.update(field.type.primitive.json_type())
        prop["allOf"] = [{"$ref": SCHEMA_REF + field.name}]
    else:
        prop["title"] = title_of(field.name)
        prop.update(field.type.json_type())
    default = default_of(field)
    if default is not MISSING:
        prop["default"] = default
    if field.type.repetition in (_adt.Repetition.OPTIONAL, _adt.Repetition.OPTIONAL_REPEATED):
        prop["nullable"] = True
    constraints = {
        "description": field.description,
        "minimum": field.ge,
        "maximum": field.le,
        "minLength": field.min_length,
        "maxLength": field.max_length,
        "pattern": field.regex,
        "deprecated": field.deprecated or None,
    }
    prop.update({key: value for key, value in constraints.items() if value is not None})
    return prop, enum_schema


def input_schemas(predictor) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(the Input schema, enum schemas by input name). An input without a default is required."""
    properties: dict[str, Any] = {}
    enums: dict[str, dict[str, Any]] = {}
    required: list[str] = []
    for name, field in sorted(predictor.inputs.items(), key=lambda item: item[1].order):
        properties[name], enum_schema = input_property(field)
        if enum_schema is not None:
            enums[name] = enum_schema
        if "default" not in properties[name] and "nullable" not in properties[name]:
            required.append(name)
    schema: dict[str, Any] = {"title": "Input", "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema, enums


def json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def validation_error_response() -> dict[str, Any]:
    return json_response("Validation Error", {"$ref": SCHEMA_REF + "HTTPValidationError"})


def paths() -> dict[str, Any]:
    """The routes a Cog predictor serves, as Cog documents them."""
    any_json = json_response("Successful Response", {})
    return {
        "/": {"get": {"summary": "Root", "operationId": "root__get", "responses": {"200": any_json}}},
        "/health-check": {
            "get": {
                "summary": "Healthcheck",
                "operationId": "healthcheck_health_check_get",
                "responses": {"200": any_json},
            }
        },
        "/predictions": {
            "post": {
                "summary": "Predict",
                "description": "Run a single prediction on the model",
                "operationId": "predict_predictions_post",
                "requestBody": {
                    "content": {"application/json": {"schema": {"$ref": SCHEMA_REF + "PredictionRequest"}}}
                },
                "responses": {
                    "200": json_response("Successful Response", {"$ref": SCHEMA_REF + "PredictionResponse"}),
                    "422": validation_error_response(),
                },
            }
        },
        "/predictions/{prediction_id}/cancel": {
            "post": {
                "summary": "Cancel",
                "operationId": "cancel_predictions__prediction_id__cancel_post",
                "parameters": [
                    {
                        "required": True,
                        "schema": {"title": "Prediction Id", "type": "string"},
                        "name": "prediction_id",
                        "in": "path",
                    }
                ],
                "responses": {"200": any_json, "422": validation_error_response()},
            }
        },
    }


def envelope_schemas() -> dict[str, Any]:
    """Request, response, status and validation-error schemas (the same for every predictor)."""

    def string(title: str, **extra: str) -> dict[str, str]:
        return {"title": title, "type": "string", **extra}

    return {
        "PredictionRequest": {
            "title": "PredictionRequest",
            "type": "object",
            "properties": {"id": string("Id"), "input": {"$ref": SCHEMA_REF + "Input"}},
        },
        "PredictionResponse": {
            "title": "PredictionResponse",
            "type": "object",
            "properties": {
                "input": {"$ref": SCHEMA_REF + "Input"},
                "output": {"$ref": SCHEMA_REF + "Output"},
                "id": string("Id"),
                "version": string("Version"),
                "created_at": string("Created At", format="date-time"),
                "started_at": string("Started At", format="date-time"),
                "completed_at": string("Completed At", format="date-time"),
                "status": string("Status"),
                "error": string("Error"),
                "logs": string("Logs"),
                "metrics": {"title": "Metrics", "type": "object"},
            },
        },
        "Status": {
            "title": "Status",
            "description": "An enumeration.",
            "enum": PREDICTION_STATUSES,
            "type": "string",
        },
        "HTTPValidationError": {
            "title": "HTTPValidationError",
            "type": "object",
            "properties": {
                "detail": {
                    "title": "Detail",
                    "type": "array",
                    "items": {"$ref": SCHEMA_REF + "ValidationError"},
                }
            },
        },
        "ValidationError": {
            "title": "ValidationError",
            "required": ["loc", "msg", "type"],
            "type": "object",
            "properties": {
                "loc": {
                    "title": "Location",
                    "type": "array",
                    "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                },
                "msg": string("Message"),
                "type": string("Error Type"),
            },
        },
    }


def openapi_document(predictor) -> dict[str, Any]:
    """The OpenAPI 3.0.2 document for `predictor` (a `cog._adt.PredictorInfo`)."""
    input_schema, enums = input_schemas(predictor)
    schemas = {"Input": input_schema, "Output": predictor.output.json_type(), **enums, **envelope_schemas()}
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": paths(),
        "components": {"schemas": schemas},
    }


def render(document: dict[str, Any]) -> str:
    """The file's exact text: 2-space indented JSON and a final newline."""
    return json.dumps(document, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from a fresh one")
    parser.add_argument("--output", type=Path, default=SCHEMA_PATH, help="default: %(default)s")
    args = parser.parse_args(argv)
    text = render(openapi_document(load_predictor()))
    if args.check:
        current = args.output.read_text() if args.output.is_file() else None
        if current != text:
            state = "missing" if current is None else "out of date"
            print(
                f"{args.output} is {state}; run: python scripts/generate_openapi_schema.py", file=sys.stderr
            )
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
