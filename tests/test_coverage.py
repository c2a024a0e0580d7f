"""The coverage tracker and the stop rule: code decides what is covered and when to stop."""

from __future__ import annotations

from agents.coverage import Coverage, IntakeElement, stop_reason, update_coverage, wants_to_end


def test_a_fresh_intake_has_every_element_open_in_interview_order() -> None:
    coverage = Coverage()
    assert coverage.open_elements(max_attempts=2) == list(IntakeElement)
    assert coverage.open_elements(2)[0] == IntakeElement.CHIEF_COMPLAINT


def test_an_answer_covers_the_element_it_was_asked_about() -> None:
    coverage = update_coverage(Coverage(), IntakeElement.ALLERGIES, "turn-1", "Penicillin gives me hives.")
    assert coverage.status(IntakeElement.ALLERGIES) == "covered"
    assert coverage.elements[IntakeElement.ALLERGIES].turn_ids == ["turn-1"]


def test_a_rich_symptom_answer_covers_the_hpi_elements_it_speaks_to() -> None:
    answer = "It started three days ago, a sharp pain that gets worse when I climb stairs. It comes and goes."
    coverage = update_coverage(Coverage(), IntakeElement.CHIEF_COMPLAINT, "turn-1", answer)
    for element in (
        IntakeElement.ONSET,
        IntakeElement.CHARACTER,
        IntakeElement.AGGRAVATING_RELIEVING,
        IntakeElement.TIMING,
    ):
        assert coverage.status(element) == "covered", element
    assert coverage.status(IntakeElement.RADIATION) == "unanswered"


def test_a_medication_answer_does_not_count_as_symptom_timing() -> None:
    coverage = update_coverage(Coverage(), IntakeElement.MEDICATIONS, "turn-5", "I take it every day in the morning.")
    assert coverage.status(IntakeElement.TIMING) == "unanswered"


def test_an_empty_answer_leaves_the_element_open_until_the_attempt_limit() -> None:
    coverage = update_coverage(Coverage(), IntakeElement.ONSET, "turn-1", "   ")
    assert coverage.status(IntakeElement.ONSET) == "unanswered"
    assert IntakeElement.ONSET in coverage.open_elements(max_attempts=2)
    coverage = update_coverage(coverage, IntakeElement.ONSET, "turn-2", "")
    assert IntakeElement.ONSET not in coverage.open_elements(max_attempts=2)


def test_a_declined_question_is_recorded_as_declined() -> None:
    coverage = update_coverage(Coverage(), IntakeElement.HISTORY, "turn-3", "I'd rather not say.")
    assert coverage.status(IntakeElement.HISTORY) == "declined"
    assert IntakeElement.HISTORY not in coverage.open_elements(2)


def test_the_patient_can_end_the_interview() -> None:
    assert wants_to_end("That's all, I want to stop now.")
    assert not wants_to_end("It stops hurting when I rest.")


def test_stop_rule_order_patient_end_then_covered_then_cap() -> None:
    fresh = Coverage()
    assert stop_reason(fresh, 3, 20, 2, ended_by_patient=True) == "patient_ended"
    assert stop_reason(fresh, 20, 20, 2, ended_by_patient=False) == "question_cap"
    assert stop_reason(fresh, 5, 20, 2, ended_by_patient=False) is None
    done = fresh
    for index, element in enumerate(IntakeElement):
        done = update_coverage(done, element, f"turn-{index}", "an answer")
    assert stop_reason(done, 13, 20, 2, ended_by_patient=False) == "covered"
