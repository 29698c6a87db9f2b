"""Issue 13, rule 6: stage volumes use the generally available form (`source: stage` with `stageConfig`), not
the deprecated `source: "@STAGE"`, and each container mounts only the stages it reads: the gateway the audio
stage (stage jobs), the GPU workers the model stage (the Whisper replicas load the checkpoint), the Ray
head none (audio reaches the Decoder as bytes, and no replica runs there).
https://docs.snowflake.com/en/developer-guide/snowpark-container-services/snowflake-stage-volume
The rendered specs (spec/*.yaml, what `make deploy` uploads) are parsed as YAML."""

from __future__ import annotations

import pytest

from tests.unit.test_deploy import SPEC_NAMES, spec

READS = {"gateway": {"AUDIO_FILES_STAGE"}, "head": set(), "worker": {"MODELS"}}


@pytest.mark.parametrize("key", SPEC_NAMES)
def test_stage_volumes_use_the_current_form(key: str) -> None:
    for volume in spec(key)["spec"].get("volumes", []):
        assert not str(volume["source"]).startswith("@"), f"{key}: deprecated stage volume {volume}"
        if volume["source"] == "stage":
            assert set(volume) == {"name", "source", "stageConfig"}, volume
            assert volume["stageConfig"]["name"].startswith("@"), volume


@pytest.mark.parametrize("key", SPEC_NAMES)
def test_each_container_mounts_only_the_stages_it_reads(key: str) -> None:
    body = spec(key)["spec"]
    stages = {v["name"]: v["stageConfig"]["name"][1:] for v in body.get("volumes", []) if v["source"] == "stage"}
    mounted = {stages[m["name"]] for c in body["containers"] for m in c.get("volumeMounts", []) if m["name"] in stages}
    assert mounted == READS[key]
    assert set(stages.values()) == READS[key]  # no stage volume declared and left unmounted either
