"""The form's presets: registered models with their default partitions, datasets, and the compression fields."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from backend.jsonbody import StrictJSONRoute
from slimpipe import names, presets
from slimpipe.spec import CompressionSpec

router = APIRouter(tags=["zoo"], route_class=StrictJSONRoute)


@router.get("/zoo")
def zoo() -> dict[str, Any]:
    return {
        "models": {
            name: {"default_stages": presets.DEFAULT_STAGES[name], "description": presets.DESCRIPTIONS[name]}
            for name in names.MODELS
        },
        "datasets": list(names.DATASETS),
        "compression_fields": CompressionSpec.model_json_schema(),
    }
