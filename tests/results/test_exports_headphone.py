"""Headphone-check results in the exports: participants.csv columns, screening.csv, and the
failed_headphone exclusion. ScreeningTrial rows are written directly, as the check stores them."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from app.core.schema import Participant
from app.core.settings import Settings
from tests.admin_client import fast_login
from tests.study import Study, build_study


def frame(study: Study, name: str) -> pd.DataFrame:
    r = study.client.get("/admin/experiments/1/export", params={"file": name})
    assert r.status_code == 200, r.text
    return pd.read_csv(io.BytesIO(r.content))


def test_headphone_results_appear_in_participants_screening_and_exclusions(settings: Settings, tmp_path: Path) -> None:
    from app.core.schema import ScreeningTrial

    st = build_study(settings, tmp_path)
    for pid in ("good", "bad"):
        t = st.join(pid)
        st.run_all(t)
        st.post(t, "/api/session/complete")
    with st.sessions() as s:
        people = {p.platform_pid: p for p in s.scalars(sa.select(Participant))}
        for attempt, n_ok in ((1, 4), (2, 6)):
            for i in range(6):
                s.add(ScreeningTrial(participant_id=people["good"].id, check="antiphase", attempt=attempt, index=i, stimulus=f"a{i}",
                                     correct_answer=1, answer=1 if i < n_ok else 2, correct=i < n_ok, rt_ms=800.0 + i, payload_sha256="x" * 64))
        people["good"].headphone_passed = True
        people["good"].headphone_score = {"antiphase": {"passed": True, "attempts": [{"correct": 4}, {"correct": 6}]}}
        people["bad"].headphone_passed = False
        people["bad"].headphone_score = "not a mapping"  # read defensively
        s.commit()
    csrf = fast_login(st)
    assert csrf
    by = frame(st, "participants.csv").set_index("platform_pid")
    assert bool(by.loc["good", "headphone_passed"]) is True and bool(by.loc["bad", "headphone_passed"]) is False
    assert (by.loc["good", "headphone_antiphase_attempts"], by.loc["good", "headphone_antiphase_trials"], by.loc["good", "headphone_antiphase_correct"]) == (2, 6, 6)
    assert bool(by.loc["good", "headphone_antiphase_passed"]) is True
    assert by.loc["good", "headphone_huggins_attempts"] == 0 and math.isnan(by.loc["good", "headphone_huggins_correct"])
    screening = frame(st, "screening.csv")
    assert len(screening) == 12 and set(screening["check"]) == {"antiphase"}
    assert pd.api.types.is_bool_dtype(screening["correct"]) and screening["correct"].sum() == 10
    assert pd.api.types.is_float_dtype(screening["rt_ms"])
    side = frame(st, "exclusions.csv").set_index("platform_pid")
    assert list(side.index) == ["bad"] and side.loc["bad", "reasons"] == "failed_headphone"
