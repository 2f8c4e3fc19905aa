"""Eligibility against a state program: pure logic, no Flask, no database."""

from __future__ import annotations

from datetime import date

from crm.services.eligibility import ConditionFacts, ProgramFacts, age_on, condition_words, evaluate

FL = ProgramFacts(
    state="FL",
    name="Florida",
    program_type="medical",
    qualifying=frozenset({"epilepsy", "ptsd"}),
    physician_discretion=True,
    telehealth_allowed=True,
    minimum_age=18,
    registry_url="https://example.org/fl-registry",
    reviewed_on=date(2026, 11, 1),
)
NY = ProgramFacts(
    state="NY",
    name="New York",
    program_type="medical_and_adult_use",
    qualifying=frozenset({"epilepsy"}),
    physician_discretion=False,
    telehealth_allowed=False,
    minimum_age=21,
)
EPILEPSY = ConditionFacts("epilepsy", "Epilepsy")
DYSTONIA = ConditionFacts("dystonia", "Dystonia")


def rule(result: dict, name: str) -> dict:
    return next(c for c in result["checks"] if c["rule"] == name)


def test_qualifying_condition_is_eligible_with_telehealth():
    r = evaluate(state="FL", program=FL, condition=EPILEPSY, age=40)
    assert r["eligible"] is True
    assert r["telehealth_allowed"] is True
    assert rule(r, "condition")["text"] == "Epilepsy is a qualifying condition in FL."
    assert r["summary"] == "Eligible in Florida."
    assert r["program"]["registry_url"] == "https://example.org/fl-registry"
    assert r["program"]["reviewed_on"] == "2026-11-01"
    assert r["reasons"] == []


def test_unlisted_condition_at_physician_discretion_passes():
    r = evaluate(state="FL", program=FL, condition=DYSTONIA, age=40)
    assert r["eligible"] is True
    assert "at their discretion" in rule(r, "condition")["text"]


def test_condition_not_qualifying_without_discretion_fails():
    r = evaluate(state="NY", program=NY, condition=DYSTONIA, age=40)
    assert r["eligible"] is False
    assert r["reasons"] == ["Dystonia is not a qualifying condition in NY."]
    assert r["summary"] == "Not eligible in New York: Dystonia is not a qualifying condition in NY."


def test_no_program_in_state():
    r = evaluate(state="ID", program=None, condition=EPILEPSY, age=40)
    assert r["eligible"] is False
    assert r["reasons"] == ["No medical cannabis program in ID."]
    assert r["telehealth_allowed"] is False
    none = ProgramFacts(state="ID", name="Idaho", program_type="none")
    assert evaluate(state="ID", program=none, condition=EPILEPSY, age=40)["reasons"] == [
        "No medical cannabis program in ID."
    ]


def test_cbd_only_program_is_not_a_medical_card():
    tx = ProgramFacts(state="TX", name="Texas", program_type="cbd_only", telehealth_allowed=True)
    r = evaluate(state="TX", program=tx, condition=EPILEPSY, age=40)
    assert r["eligible"] is False
    # The state's name keeps its capital ("texas has only ..." before).
    assert r["summary"] == "Not eligible in Texas: Texas has only a low-THC / CBD program, not a medical card."
    assert evaluate(state="ID", program=None, condition=EPILEPSY, age=40)["summary"] == (
        "Not eligible in ID: no medical cannabis program in ID."
    )
    assert "only a low-THC / CBD program" in r["reasons"][0]
    assert r["telehealth_allowed"] is False  # no medical program: no telehealth list either


def test_under_minimum_age():
    r = evaluate(state="NY", program=NY, condition=EPILEPSY, age=19)
    assert r["eligible"] is False
    assert r["reasons"] == ["Under the minimum age of 21 in NY (the patient is 19)."]


def test_age_unknown_or_only_confirmed_adult():
    assert evaluate(state="FL", program=FL, condition=EPILEPSY, age=None, age_confirmed=True)["eligible"] is True
    unknown = evaluate(state="FL", program=FL, condition=EPILEPSY, age=None)
    assert unknown["eligible"] is None
    assert rule(unknown, "age")["status"] == "unknown"
    # A confirmed adult (18+) is not known to be 21+.
    ny = evaluate(state="NY", program=NY, condition=EPILEPSY, age=None, age_confirmed=True)
    assert ny["eligible"] is None and "requires 21 or older" in ny["reasons"][0]


def test_telehealth_not_allowed_is_said_in_words():
    r = evaluate(state="NY", program=NY, condition=EPILEPSY, age=30, wants_telehealth=True)
    assert r["eligible"] is True  # a note, not a failure: an in-person visit still works
    assert r["telehealth_allowed"] is False
    check = rule(r, "telehealth")
    assert check["status"] == "note"
    assert check["text"] == (
        "Telehealth certification is not allowed in NY: the patient asked for telehealth, "
        "but an in-person visit is needed."
    )


def test_unknown_state_and_condition():
    r = evaluate(state=None, program=None, condition=None, age=None)
    assert r["eligible"] is None
    assert "not known yet" in r["reasons"][0]
    no_condition = evaluate(state="FL", program=FL, condition=None, age=30)
    assert no_condition["eligible"] is None and "No condition chosen" in no_condition["reasons"][0]


def test_helpers():
    assert age_on(date(2000, 6, 15), date(2026, 6, 14)) == 25
    assert age_on(date(2000, 6, 15), date(2026, 6, 15)) == 26
    assert age_on(None, date(2026, 1, 1)) is None
    assert condition_words("Dystonia") == "dystonia"
    assert condition_words("PTSD") == "PTSD"
    assert condition_words("Crohn's disease") == "Crohn's disease"
    assert condition_words("Muscle spasms") == "muscle spasms"
