"""The `previsit` command line: simulate, chat, sessions, resume, show, writeback, serve, sandbox, scenarios import.

Every failure a user can cause or meet (a bad scenario, an unknown patient, a locked database, a
model that cannot load) ends in one clear line on stderr and a non-zero exit, never a traceback;
answers already given are always on disk before the error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import uuid
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from agents.simulated_patient import PatientResponder, simulated_patient
from agents.transcript import Turn
from graphs.checkpoint import (
    SessionStoreError,
    database_path,
    describe_sqlite_error,
    list_thread_ids,
    open_checkpointer,
)
from graphs.context import IntakeContext
from graphs.intake import compile_intake_graph
from graphs.patient_message import ImageAttachment, PatientMessage
from graphs.render import render_html, render_json
from graphs.render_fhir import render_fhir_bundle
from graphs.scenario import Scenario, ScenarioError, load_scenario
from graphs.session import IntakeGraph, PendingQuestion, SessionObserver, SessionView, drive_session, inspect_session
from graphs.state import IntakeInput, IntakeState
from previsit import sandbox
from previsit.config import (
    MODEL_SPECS_HELP,
    Settings,
    build_fhir_auth,
    build_image_triager,
    build_model,
    build_record_source,
)
from previsit.suite_cli import load_embedder
from tools.fhir.auth import AuthConfigError
from tools.fhir.client import check_base_url
from tools.fhir.record import PatientNotFoundError, RecordError, RecordSource
from tools.fhir.server_source import FhirRecordSource
from tools.fhir.writeback import write_back_summary
from tools.imaging.triage import ImageTriager
from tools.models.protocol import ChatModel, ModelError

EXIT_USAGE = 2
IMAGE_MODEL_HELP = (
    "image triage model: Hugging Face id in the local cache or a local folder, or 'none' "
    "(default google/medsiglip-448; env PREVISIT_IMAGE_MODEL)"
)
EXIT_FAILED = 3


class CliError(Exception):
    """A failure to report in one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class PrintingObserver(SessionObserver):
    """Streams the transcript to the terminal as it happens."""

    def __init__(self, out: TextIO, *, echo_answers: bool = True) -> None:
        self.out = out
        self.echo_answers = echo_answers

    def question(self, turn: int, text: str) -> None:
        print(f"\n[{turn}] previsit: {text}", file=self.out, flush=True)

    def answer(self, turn: Turn) -> None:
        if self.echo_answers:
            shown = turn.answer if len(turn.answer) <= 600 else f"{turn.answer[:600]} … ({turn.answer_chars} chars)"
            print(f"[{turn.index}] patient:  {shown or '(no answer)'}", file=self.out, flush=True)


def _progress(message: str) -> None:
    print(f"[model] {message}", file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        data_dir=getattr(args, "data_dir", None),
        records_dir=getattr(args, "records_dir", None),
        model=getattr(args, "model", None),
        max_questions=getattr(args, "max_questions", None),
        fhir_base=getattr(args, "fhir_base", None),
        image_model=getattr(args, "image_model", None),
    )


def _fhir_base(settings: Settings) -> str | None:
    """The FHIR base URL to use (the word 'sandbox' resolved), or None for the fixture bundles."""
    if not settings.fhir_base:
        return None
    try:
        return check_base_url(sandbox.resolve_base(settings.fhir_base, settings.data_dir))
    except (sandbox.SandboxError, RecordError) as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc


def _stored_base(settings: Settings) -> str | None:
    """The FHIR base as the session keeps it (credentials in the URL are never stored)."""
    if not settings.fhir_base:
        return None
    parts = urlsplit(settings.fhir_base)
    if parts.username or parts.password:
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=host))
    return settings.fhir_base


def _session_settings(settings: Settings, args: argparse.Namespace, state: IntakeState) -> Settings:
    """The settings a later command on a session runs with: its own FHIR server unless one is given."""
    given = getattr(args, "fhir_base", None)
    if given is None and state.fhir_base is not None:
        print(f"FHIR server: {state.fhir_base} (the one this session started with)")
        return settings.model_copy(update={"fhir_base": state.fhir_base})
    if given is not None and state.fhir_base is not None and given != state.fhir_base:
        print(
            f"warning: this session started with FHIR server {state.fhir_base}; using {given} as asked.",
            file=sys.stderr,
        )
    return settings


def _record_source(settings: Settings, bound_patient: str | None) -> RecordSource:
    try:
        return build_record_source(settings, bound_patient=bound_patient, fhir_base=_fhir_base(settings))
    except (AuthConfigError, RecordError) as exc:
        raise CliError(f"FHIR settings: {exc}", EXIT_USAGE) from exc


def _load_model(spec: str, settings: Settings, scenario: Scenario | None) -> ChatModel | None:
    try:
        model = build_model(spec, settings, script=scenario.model_script if scenario else None, progress=_progress)
    except ModelError as exc:
        raise CliError(f"cannot load model {spec!r}: {exc}") from exc
    if model is not None and model.is_demo:
        print(
            f"[model] {model.model_id} is a small DEMO model: its wording is not clinical quality; "
            "coverage, stop rules and safety rules are code and do not depend on it.",
            file=sys.stderr,
        )
    return model


async def _check_patient(source: RecordSource, patient_id: str) -> None:
    try:
        await source.fetch_record(patient_id)
    except PatientNotFoundError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    except RecordError as exc:
        print(f"warning: the record cannot be read ({exc}); the intake goes on and flags it.", file=sys.stderr)


def _patient_ref(state: IntakeState) -> str:
    return state.record.demographics.ref if state.record else f"Patient/{state.patient_id}"


def _write_outputs(out_dir: Path, view: SessionView) -> Path | None:
    state = view.state
    if state is None or state.summary is None:
        return None
    target = out_dir / view.session_id
    target.mkdir(parents=True, exist_ok=True)
    (target / "summary.json").write_text(render_json(state.summary), encoding="utf-8")
    (target / "summary.md").write_text(state.markdown, encoding="utf-8")
    (target / "summary.html").write_text(render_html(state.summary, state.turns, state.images), encoding="utf-8")
    fhir = render_fhir_bundle(state.summary, state.turns, view.session_id, patient_ref=_patient_ref(state))
    (target / "summary.fhir.json").write_text(json.dumps(fhir, indent=2), encoding="utf-8")
    transcript = [t.model_dump(mode="json") for t in state.turns]
    (target / "transcript.json").write_text(json.dumps(transcript, indent=2), encoding="utf-8")
    return target


def _report(view: SessionView, settings: Settings, out: TextIO, out_dir: Path | None) -> None:
    state = view.state
    if view.status == "finished" and state is not None:
        if state.patient_message:
            print(f"\nprevisit: {state.patient_message}", file=out)
        print("\n" + "=" * 78 + "\nCLINICIAN SUMMARY\n" + "=" * 78 + "\n", file=out)
        print(state.markdown, file=out)
        written = _write_outputs(out_dir or settings.data_dir / "out", view)
        if written:
            print(f"Summary written to {written}/ (summary.md, .html, .json, .fhir.json)", file=out)
    elif view.status in ("waiting_for_patient", "in_progress"):
        print(
            f"\nSession {view.session_id} is paused with {len(state.turns) if state else 0} answer(s) saved. "
            f"Continue it with: previsit resume {view.session_id}",
            file=out,
        )


ATTACH_HELP = "/attach <path> [modality] adds an image to your next answer"


def _parse_attach(line: str) -> ImageAttachment | str:
    """An `/attach <path> [modality]` line as an attachment, or why it cannot be one."""
    parts = line.split()
    if len(parts) < 2 or len(parts) > 3:
        return f"usage: {ATTACH_HELP}"
    path = Path(parts[1]).expanduser().resolve()
    if not path.is_file():
        return f"no such file: {path}"
    return ImageAttachment(path=str(path), filename=path.name, modality=parts[2] if len(parts) == 3 else None)


async def _stdin_patient(pending: PendingQuestion) -> str | dict[str, Any] | None:
    """One answer from the keyboard; `/attach` lines before it attach images to it."""
    images: list[ImageAttachment] = []
    while True:
        try:
            line = await asyncio.to_thread(input, "you> ")
        except EOFError:
            return None
        if not line.startswith("/attach"):
            break
        attached = _parse_attach(line)
        if isinstance(attached, str):
            print(f"[image] {attached}", flush=True)
            continue
        images.append(attached)
        print(f"[image] {attached.filename} will be sent with your next answer", flush=True)
    return PatientMessage(text=line, images=images).model_dump() if images else line


def _image_triager(settings: Settings) -> ImageTriager | None:
    """The triage model, loaded on the first image; one that cannot load leaves images untriaged, flagged."""

    def warn(message: str) -> None:
        print(f"[image] warning: {message}\n[image] images are kept untriaged and flagged.", file=sys.stderr)

    return build_image_triager(settings, on_unavailable=warn)


def _scenario_patient(scenario: Scenario, model: ChatModel | None, settings: Settings) -> PatientResponder:
    """The simulated patient the scenario asks for; the embedding patient loads the sentence encoder."""
    mode = scenario.simulated_patient
    if mode == "model" and model is None:
        mode = "facts"
    embedder = None
    if mode == "embedding":
        notes: list[str] = []
        embedder = load_embedder(settings, notes)
        if embedder is None:
            raise CliError(f"{scenario.id}: the embedding patient needs the sentence encoder: {notes[-1]}")
    diagnosis = scenario.evaluation.correct_diagnosis if scenario.evaluation else None
    return simulated_patient(
        scenario.brief(),
        model if mode == "model" else None,
        mode,
        embedder=embedder,
        withheld=[diagnosis] if diagnosis else [],
    )


async def _run(
    settings: Settings,
    session_id: str,
    *,
    start: IntakeInput | None,
    scenario: Scenario | None,
    model_spec: str,
    live: bool,
    out_dir: Path | None,
    writeback: bool = False,
) -> int:
    source = _record_source(settings, start.patient_id if start is not None else None)
    if start is not None:
        await _check_patient(source, start.patient_id)
    model = _load_model(model_spec, settings, scenario)
    patient = None
    if scenario is not None:
        patient = _scenario_patient(scenario, model, settings)
    context = IntakeContext(
        record_source=source,
        model=model,
        patient=patient,
        today=scenario.visit_date if scenario else None,
        image_triager=_image_triager(settings),
        scheduled_images=scenario.scheduled_images() if scenario else (),
        **asdict(settings.tuning()),
    )
    async with AsyncExitStack() as stack:
        saver = await stack.enter_async_context(
            open_checkpointer(settings.data_dir, lock_timeout_s=settings.lock_timeout_s)
        )
        graph = compile_intake_graph(saver)
        print(f"Session {session_id}", file=sys.stdout, flush=True)
        view = await drive_session(
            graph,
            session_id,
            context,
            start=start,
            ask_patient=_stdin_patient if live else None,
            observer=PrintingObserver(sys.stdout, echo_answers=not live),
        )
        _report(view, settings, sys.stdout, out_dir)
    if writeback and view.status == "finished":
        await _write_back(settings, view)
    return 0


async def _write_back(settings: Settings, view: SessionView) -> None:
    """Send a finished session's summary to the FHIR server; running it again creates nothing new."""
    state = view.state
    if state is None or state.summary is None:
        raise CliError(f"session {view.session_id} has no summary to write back (finish it first)", EXIT_USAGE)
    base = _fhir_base(settings)
    if base is None:
        raise CliError("write-back needs a FHIR server: pass --fhir-base URL or set PREVISIT_FHIR_BASE", EXIT_USAGE)
    try:
        source = FhirRecordSource(base, auth=build_fhir_auth(settings), timeout_s=settings.fhir_timeout_s)
        async with source.client() as client:
            patient = await source.resolve_patient(client, state.patient_id)
            result = await write_back_summary(
                client,
                state.summary,
                state.turns,
                view.session_id,
                f"Patient/{patient['id']}",
                await source.capabilities(client),
            )
    except (AuthConfigError, RecordError) as exc:
        raise CliError(
            f"write-back to {base} failed: {exc}. The summary is saved; send it again with: "
            f"previsit writeback {view.session_id} --fhir-base {settings.fhir_base}"
        ) from exc
    if state.record is not None and state.record.source != base:
        print(f"note: the record was read from {state.record.source}; the summary cites resources there.")
    print(f"Wrote session {view.session_id} to {base}: {result.describe()}")
    for ref in result.created:
        print(f"  created  {ref}")
    for ref in result.existing:
        print(f"  exists   {ref}")
    for note in result.notes:
        print(f"  note: {note}")


def cmd_simulate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if (args.scenario is None) == (args.suite is None):
        raise CliError("give either one scenario file or --suite DIR|JSONL", EXIT_USAGE)
    if args.suite is not None:
        from graphs.suite import SuiteSetupError
        from previsit.suite_cli import simulate_suite

        try:
            return simulate_suite(
                args.suite,
                settings,
                _record_source(settings, None),
                out_dir=args.out,
                concurrency=args.concurrency,
                patient=args.patient,
                max_questions=args.max_questions,
                exact_matching=args.fact_matching == "exact",
            )
        except SuiteSetupError as exc:
            raise CliError(str(exc), EXIT_USAGE) from exc
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    session_id = args.session or f"{scenario.id}-{uuid.uuid4().hex[:8]}"
    max_questions = args.max_questions if args.max_questions is not None else scenario.max_questions
    start = IntakeInput(
        patient_id=scenario.patient_id,
        reason_for_visit=scenario.reason_for_visit,
        max_questions=max_questions,
        scenario_path=str(Path(args.scenario).resolve()),
        model_spec=settings.model,
        fhir_base=_stored_base(settings),
        write_back=args.writeback,
    )
    print(f"Simulated intake: {scenario.title} (patient {scenario.patient_id})")
    return asyncio.run(
        _run(
            settings,
            session_id,
            start=start,
            scenario=scenario,
            model_spec=settings.model,
            live=False,
            out_dir=args.out,
            writeback=args.writeback,
        )
    )


def cmd_chat(args: argparse.Namespace) -> int:
    settings = _settings(args)
    session_id = args.session or f"chat-{uuid.uuid4().hex[:8]}"
    start = IntakeInput(
        patient_id=args.patient,
        reason_for_visit=args.reason,
        max_questions=settings.max_questions,
        model_spec=settings.model,
        fhir_base=_stored_base(settings),
    )
    print(
        "You are the patient. Type your answer and press Enter; 'that's all' ends the interview; "
        f"Ctrl-D pauses (resume later); {ATTACH_HELP}."
    )
    return asyncio.run(
        _run(settings, session_id, start=start, scenario=None, model_spec=settings.model, live=True, out_dir=args.out)
    )


async def _load_view(settings: Settings, session_id: str) -> SessionView:
    async with open_checkpointer(settings.data_dir, create=False, lock_timeout_s=settings.lock_timeout_s) as saver:
        view = await inspect_session(compile_intake_graph(saver), session_id)
    if view.status == "not_found":
        raise CliError(
            f"No session {session_id!r} in {settings.data_dir}. List them with: previsit sessions", EXIT_USAGE
        )
    return view


def cmd_resume(args: argparse.Namespace) -> int:
    settings = _settings(args)
    view = asyncio.run(_load_view(settings, args.session_id))
    state = view.state
    assert state is not None
    settings = _session_settings(settings, args, state)
    if view.status == "finished":
        print(f"Session {args.session_id} is already finished.")
        _report(view, settings, sys.stdout, args.out)
        return 0
    scenario = None
    if state.scenario_path:
        try:
            scenario = load_scenario(state.scenario_path)
        except ScenarioError as exc:
            raise CliError(f"cannot resume the simulation: {exc}") from exc
    spec = args.model or state.model_spec
    print(f"Resuming session {args.session_id}: {len(state.turns)} answer(s) saved.")
    for turn in state.turns:
        print(f"[{turn.index}] previsit: {turn.question}\n[{turn.index}] patient:  {turn.answer}")
    return asyncio.run(
        _run(
            settings,
            args.session_id,
            start=None,
            scenario=scenario,
            model_spec=spec,
            live=scenario is None,
            out_dir=args.out,
            writeback=args.writeback or state.write_back,
        )
    )


async def _session_rows(settings: Settings) -> list[tuple[str, str, str, int]]:
    rows: list[tuple[str, str, str, int]] = []
    async with open_checkpointer(settings.data_dir, create=False, lock_timeout_s=settings.lock_timeout_s) as saver:
        graph: IntakeGraph = compile_intake_graph(saver)
        for session_id in await list_thread_ids(saver):
            view = await inspect_session(graph, session_id)
            if view.state is not None:
                rows.append((session_id, view.state.patient_id, view.status, len(view.state.turns)))
    return rows


def cmd_sessions(args: argparse.Namespace) -> int:
    settings = _settings(args)
    rows = asyncio.run(_session_rows(settings))
    if not rows:
        print(f"No sessions in {settings.data_dir}.")
        return 0
    print(f"{'SESSION':<40} {'PATIENT':<40} {'STATUS':<20} ANSWERS")
    for session_id, patient, status, answers in rows:
        print(f"{session_id:<40} {patient[:40]:<40} {status:<20} {answers}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    settings = _settings(args)
    view = asyncio.run(_load_view(settings, args.session_id))
    state: IntakeState | None = view.state
    assert state is not None
    if args.json:
        print(state.model_dump_json(indent=2, exclude={"record"}))
        return 0
    print(f"Session {view.session_id}: {view.status.replace('_', ' ')}")
    print(f"Patient: {state.patient_id}; reason: {state.reason_for_visit or 'not given'}; model: {state.model_spec}")
    covered = [e.value for e, c in state.coverage.elements.items() if c.status == "covered"]
    print(f"Covered: {', '.join(covered) or 'nothing yet'}")
    for turn in state.turns:
        print(f"[{turn.index}] previsit: {turn.question}\n[{turn.index}] patient:  {turn.answer}")
    if view.pending:
        print(f"[{view.pending.turn}] previsit: {view.pending.question}   (waiting for the patient)")
    if state.markdown:
        print("\n" + state.markdown)
    return 0


def cmd_writeback(args: argparse.Namespace) -> int:
    settings = _settings(args)
    view = asyncio.run(_load_view(settings, args.session_id))
    if view.status != "finished" or view.state is None:
        raise CliError(f"session {args.session_id} is {view.status.replace('_', ' ')}; finish it first", EXIT_USAGE)
    asyncio.run(_write_back(_session_settings(settings, args, view.state), view))
    return 0


def cmd_scenarios_import(args: argparse.Namespace) -> int:
    """`previsit scenarios import agentclinic|synthea ...`: scenario YAML files plus Patient bundles."""
    from graphs.importers import import_agentclinic, import_synthea, write_import

    if args.source == "agentclinic":
        if args.limit is not None and args.limit < 1:
            raise CliError("--limit must be at least 1", EXIT_USAGE)
        result = import_agentclinic(args.jsonl, limit=args.limit)
    else:
        if not args.reason.strip():
            raise CliError("--reason must not be empty", EXIT_USAGE)
        result = import_synthea(list(args.bundles), args.reason)
    for problem in result.problems:
        print(f"warning: {problem}", file=sys.stderr)
    written = write_import(result, args.out)
    skipped = f"skipped {len(result.problems)}" + (" (see warnings above)" if result.problems else "")
    print(f"written {len(written)} scenario(s) to {args.out}, {skipped}")
    return 0 if written else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from previsit.service.clinician_keys import ClinicianKeysError
    from previsit.service.serve import serve  # the web stack loads only for this command

    settings = _settings(args)
    try:
        return serve(
            settings,
            host=args.host,
            port=args.port,
            db=args.db,
            fhir_base=_fhir_base(settings),
            cors_origins=args.cors_origin,
        )
    except ClinicianKeysError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc


def cmd_clinician_key(args: argparse.Namespace) -> int:
    """`previsit clinician-key NAME`: a new named key for the service, printed once, stored as a digest."""
    from previsit.service.clinician_keys import ClinicianKeysError, add_clinician_key
    from previsit.service.config import named_keys_file

    settings = _settings(args)
    path = args.keys_file or named_keys_file(settings.data_dir)
    try:
        key = add_clinician_key(path, args.name)
    except ClinicianKeysError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    print(f"Clinician key for {args.name} (shown once; only its SHA-256 is kept in {path}):")
    print(key)
    print("The service reads the file when it starts; remove the line to revoke the key.", file=sys.stderr)
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        if args.action == "up":
            info, seconds = sandbox.start(settings.data_dir, port=args.port)
            state = f"started in {seconds:.1f} s" if seconds else "already running"
            print(f"FHIR sandbox {state}: {info.base_url} (PID {info.pid}, log {info.log_path})")
            print(f"Load records: previsit sandbox load fixtures/fhir/synthea/*.json --data-dir {settings.data_dir}")
        elif args.action == "down":
            stopped = sandbox.stop(settings.data_dir)
            print(f"FHIR sandbox stopped (PID {stopped.pid})." if stopped else "No FHIR sandbox was running.")
        elif args.action == "status":
            running = sandbox.status(settings.data_dir)
            print(f"FHIR sandbox running: {running.base_url} (PID {running.pid})" if running else "Not running.")
            return 0 if running else 1
        else:
            if not args.bundles:
                raise CliError("sandbox load needs one or more bundle files", EXIT_USAGE)
            base = _fhir_base(settings) or sandbox.resolve_base("sandbox", settings.data_dir)
            results = asyncio.run(_load_bundles(settings, base, [Path(p) for p in args.bundles]))
            for result in results:
                names = ", ".join(result.patients) or "no patient"
                what = "already loaded, skipped" if result.skipped else f"{result.created} resources created"
                if result.error:
                    print(f"previsit: error: {result.path.name}: {result.error}", file=sys.stderr)
                else:
                    print(f"{result.path.name}: {names}: {what}")
            failed = sum(1 for r in results if r.error)
            if failed:
                raise CliError(f"{failed} of {len(results)} bundle(s) did not load")
    except sandbox.SandboxError as exc:
        raise CliError(str(exc)) from exc
    return 0


async def _load_bundles(settings: Settings, base: str, paths: list[Path]) -> list[sandbox.LoadResult]:
    source = FhirRecordSource(base, auth=build_fhir_auth(settings), timeout_s=max(settings.fhir_timeout_s, 60.0))
    try:
        async with source.client() as client:
            return await sandbox.load_bundles(client, paths)
    except RecordError as exc:
        raise sandbox.SandboxError(f"cannot load into {base}: {exc}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="previsit",
        description="Pre-visit intake that gives clinicians a cited, flagged summary. It supports clinicians; "
        "it never diagnoses.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, help="where sessions and model caches live (default ./.previsit)")
    common.add_argument("--records-dir", type=Path, help="folder of FHIR bundles to read records from")
    common.add_argument(
        "--fhir-base",
        metavar="URL",
        help="read records from (and write back to) this FHIR R4 server instead of the bundles; "
        "'sandbox' = the running embedded sandbox (env PREVISIT_FHIR_BASE)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    simulate = sub.add_parser("simulate", parents=[common], help="run a simulated intake from a scenario file")
    simulate.add_argument("scenario", nargs="?", help="scenario YAML file (see fixtures/scenarios)")
    simulate.add_argument(
        "--suite",
        type=Path,
        help="run many scenarios: a folder of scenario YAML files, a JSONL of scenarios, or AgentClinic OSCE JSONL; "
        "resumable, with a report in --out (default <data-dir>/suites/<name>)",
    )
    simulate.add_argument("--concurrency", type=int, default=4, help="suite: intakes run at once (default 4)")
    simulate.add_argument(
        "--patient",
        choices=["facts", "embedding", "model"],
        help="suite: who answers (default: each scenario's own choice): fact lookup, embedding retrieval, "
        "or a model persona",
    )
    simulate.add_argument(
        "--fact-matching",
        choices=["embedding", "exact"],
        default="embedding",
        help="suite: how fact recall finds facts in summaries (default embedding: exact rules plus MiniLM)",
    )
    simulate.add_argument("--model", help=f"model backend (default demo): {MODEL_SPECS_HELP}")
    simulate.add_argument("--max-questions", type=int, help="question cap (default: the scenario's, else 20)")
    simulate.add_argument("--session", help="session id (default: scenario id + random suffix)")
    simulate.add_argument("--image-model", help=IMAGE_MODEL_HELP)
    simulate.add_argument(
        "--out", type=Path, help="output folder for summary.json/.md (default <data-dir>/out), or the suite's report"
    )
    simulate.add_argument(
        "--writeback", action="store_true", help="write the finished summary to the FHIR server (--fhir-base)"
    )
    simulate.set_defaults(func=cmd_simulate)

    chat = sub.add_parser("chat", parents=[common], help="a live intake in the terminal: you are the patient")
    chat.add_argument("--patient", required=True, help="patient id, Synthea identifier or bundle file stem")
    chat.add_argument("--reason", help="reason for visit from the booking")
    chat.add_argument("--model", help=f"model backend (default demo): {MODEL_SPECS_HELP}")
    chat.add_argument("--max-questions", type=int, help="question cap (default 20)")
    chat.add_argument("--session", help="session id (default: chat + random suffix)")
    chat.add_argument("--out", type=Path, help="output folder for summary.json/.md")
    chat.add_argument("--image-model", help=IMAGE_MODEL_HELP)
    chat.set_defaults(func=cmd_chat)

    sessions = sub.add_parser("sessions", parents=[common], help="list stored sessions")
    sessions.set_defaults(func=cmd_sessions)

    resume = sub.add_parser("resume", parents=[common], help="continue a paused or interrupted session")
    resume.add_argument("session_id")
    resume.add_argument("--model", help="override the model the session started with")
    resume.add_argument("--image-model", help=IMAGE_MODEL_HELP)
    resume.add_argument("--out", type=Path, help="output folder for summary.json/.md")
    resume.add_argument(
        "--writeback",
        action="store_true",
        help="write the finished summary to the session's FHIR server (a session started with --writeback does)",
    )
    resume.set_defaults(func=cmd_resume)

    show = sub.add_parser("show", parents=[common], help="show a session's state and transcript")
    show.add_argument("session_id")
    show.add_argument("--json", action="store_true", help="the whole state as JSON (record left out)")
    show.set_defaults(func=cmd_show)

    writeback = sub.add_parser(
        "writeback", parents=[common], help="write a finished session's summary to the FHIR server (idempotent)"
    )
    writeback.add_argument("session_id")
    writeback.set_defaults(func=cmd_writeback)

    keys = sub.add_parser(
        "clinician-key", parents=[common], help="make a named clinician key for the service (printed once)"
    )
    keys.add_argument("name", help="the clinician's name, recorded on edits and approvals made with this key")
    keys.add_argument(
        "--keys-file",
        type=Path,
        help="keys file (default <data-dir>/named_clinician_keys; env PREVISIT_CLINICIAN_KEYS_FILE)",
    )
    keys.set_defaults(func=cmd_clinician_key)

    box = sub.add_parser("sandbox", parents=[common], help="the embedded local FHIR server (SEKMET)")
    box.add_argument("action", choices=["up", "load", "down", "status"], help="start, load bundles, stop, status")
    box.add_argument("bundles", nargs="*", help="transaction bundle files to load (with 'load')")
    box.add_argument("--port", type=int, help=f"port on 127.0.0.1 (default {sandbox.DEFAULT_PORT})")
    box.set_defaults(func=cmd_sandbox)

    serve = sub.add_parser("serve", parents=[common], help="run the HTTP service (API, patient and clinician pages)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    serve.add_argument(
        "--db", help="sessions database: a SQLite file (default <data-dir>/sessions.sqlite) or postgresql://..."
    )
    serve.add_argument("--model", help=f"model backend (default demo): {MODEL_SPECS_HELP}")
    serve.add_argument("--max-questions", type=int, help="question cap of new sessions (default 20)")
    serve.add_argument("--cors-origin", action="append", help="allow this browser origin (repeatable; default: none)")
    serve.set_defaults(func=cmd_serve)

    scenarios = sub.add_parser("scenarios", help="scenario files: import from AgentClinic or Synthea")
    scenario_sub = scenarios.add_subparsers(dest="scenarios_command", required=True)
    importer = scenario_sub.add_parser("import", help="import scenarios from a case collection or a record")
    sources = importer.add_subparsers(dest="source", required=True)
    agentclinic = sources.add_parser("agentclinic", help="AgentClinic OSCE JSONL (one case a line)")
    agentclinic.add_argument("jsonl", type=Path, help="the AgentClinic JSONL file")
    agentclinic.add_argument("--out", type=Path, required=True, help="folder for the YAML files (bundles in fhir/)")
    agentclinic.add_argument("--limit", type=int, help="import at most N cases")
    agentclinic.set_defaults(func=cmd_scenarios_import)
    synthea = sources.add_parser("synthea", help="scenario skeletons from Synthea FHIR bundles")
    synthea.add_argument("bundles", nargs="+", type=Path, help="Synthea bundle JSON files")
    synthea.add_argument("--reason", required=True, help="the reason for visit of the skeleton(s)")
    synthea.add_argument("--out", type=Path, required=True, help="folder for the YAML files")
    synthea.set_defaults(func=cmd_scenarios_import)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except CliError as exc:
        print(f"previsit: error: {exc}", file=sys.stderr)
        return exc.code
    except SessionStoreError as exc:
        print(f"previsit: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except sqlite3.Error as exc:
        settings = _settings(args)
        print(
            f"previsit: error: {describe_sqlite_error(database_path(settings.data_dir), exc, settings.lock_timeout_s)}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\nInterrupted. Every answer given so far is saved; continue with previsit resume.", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("PREVISIT_DEBUG"):
            raise
        print(
            f"previsit: unexpected error: {type(exc).__name__}: {exc}. Answers given so far are saved. "
            "Set PREVISIT_DEBUG=1 for the traceback.",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
