"""Bad input over every RPC of the contracts: random and malformed requests (huge strings,
NaN and infinities, unknown enum numbers, out-of-range times, long lists, unknown fields,
missing and wrong tokens) get a proper status with a message, never UNKNOWN or INTERNAL,
and every service keeps serving afterwards.

The RPCs come from the generated descriptors, so a new RPC is covered without a change
here. The platform is a private one (its own PostgreSQL database and Redis database): the
random writes of this module (drivers streaming positions, orders, fences) would otherwise
show up in other modules' searches and lists. Hypothesis runs inside each test (no
function-scoped fixture reaches ``@given``), derandomized so that CI sees the same examples.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import text_format
from google.protobuf.message import Message
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from core.inputs import MAX_TEXT_CHARS
from ops.servers import PostgresServer, RedisServer, SeaweedS3
from tests.helpers import NOT_A_MESSAGE
from tests.integration.bad_input_support import (
    CREDENTIAL_MIX,
    EVENTS_DRIVER,
    GARBLED_DRIVER,
    KNOWN_UNIMPLEMENTED,
    LOOSE_DRIVER,
    PICKUP,
    SEED_DRIVER,
    SWEEP_DRIVER,
    Credential,
    Outcome,
    Rpc,
    Seeds,
    Summary,
    all_rpcs,
    assert_still_serving,
    assigned_order,
    call,
    connect,
    good_event,
    hello,
    metadata_for,
    pick_up,
    seed,
    sweep_ids,
)
from tests.integration.conftest import Platform, platform_settings, running_platform
from tests.integration.edge_requests import EdgeRequest, Plausible, Template, edge_value_requests
from tests.integration.fuzz_messages import MessageStrategies, Pools, unknown_fields
from tests.integration.orders_support import own_postgres_db, own_redis_db

pytestmark = pytest.mark.integration

RPCS = all_rpcs()
# Examples per RPC: about 50 RPCs, so the module takes about two minutes on two busy cores.
UNARY_EXAMPLES = 100
SERVER_STREAM_EXAMPLES = 20
CLIENT_STREAM_EXAMPLES = 100
MAX_EVENTS_PER_STREAM = 6
# Above the servers' 4 MB limit, so RESOURCE_EXHAUSTED is exercised, but bounded.
MAX_REQUEST_BYTES = 6_000_000
# Sequence numbers of well-behaved driver streams: increasing across the whole module.
SEQUENCE = itertools.count(int(time.time() * 1000))
SUMMARY_FILE = Path(__file__).resolve().parents[2] / "test-output" / "bad-input-summary.txt"
HYPOTHESIS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.function_scoped_fixture,
    ],
)


@pytest.fixture(scope="module")
def private_platform(
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    redis_db: int,
    s3_server: SeaweedS3,
    road_graph: Path,
) -> Iterator[Platform]:
    """The whole platform on its own databases; its logs must hold no traceback at the end."""
    data_dir = Path(tempfile.mkdtemp(prefix="lastmile-test-bad-input-"))
    settings = platform_settings(
        postgres_server, redis_server, s3_server, road_graph.parent, data_dir
    ).replace(
        database_url=own_postgres_db(postgres_server, "bad_input"),
        redis_url=own_redis_db(redis_server.url, redis_db),
    )
    try:
        with running_platform(settings, data_dir, s3_server) as platform:
            yield platform
        logs = {p.stem: p.read_text(errors="replace") for p in platform.log_dir.glob("*.log")}
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    # Background work (consumers of the random driver events) has no caller to answer: an
    # unexpected error there only shows in the log.
    tracebacks = {
        name: log[log.index("Traceback") :][:3000]
        for name, log in logs.items()
        if "Traceback" in log
    }
    if tracebacks:
        pytest.fail("\n\n".join(f"{name}.log:\n{text}" for name, text in tracebacks.items()))


@pytest.fixture(scope="module")
def seeds(private_platform: Platform) -> Seeds:
    """A driver, an order, an origin and a geofence that random strings may name."""
    return seed(private_platform.settings, private_platform.edge_address)


@pytest.fixture(scope="module")
def channel(private_platform: Platform) -> Iterator[grpc.Channel]:
    """One channel to the edge for every random call (the edge routes by package)."""
    with grpc.insecure_channel(private_platform.edge_address) as edge:
        yield edge


@pytest.fixture(scope="module")
def summaries() -> Iterator[dict[str, Summary]]:
    """Codes seen per RPC, written to ``test-output/`` at the end of the module."""
    collected: dict[str, Summary] = {}
    yield collected
    SUMMARY_FILE.parent.mkdir(parents=True, exist_ok=True)
    lines = [collected[path].line(path) for path in sorted(collected)]
    SUMMARY_FILE.write_text("\n".join(lines) + "\n")


def _shown(message: Message) -> str:
    text = text_format.MessageToString(message, as_one_line=True)
    return text if len(text) <= 1500 else text[:1500] + "..."


def _check(rpc: Rpc, outcome: Outcome, shown: str) -> None:
    assert outcome.code in rpc.allowed(), (
        f"{rpc.path} answered {outcome.code.name} ({outcome.details!r}) to {shown}"
    )
    if outcome.code != grpc.StatusCode.OK:
        assert outcome.details.strip(), f"{rpc.path} answered {outcome.code.name} with no message"


def test_every_rpc_of_the_contracts_is_enumerated() -> None:
    paths = {rpc.path for rpc in RPCS}
    assert len(paths) >= 40
    assert "/lastmile.driver.v1.DriverGatewayService/Connect" in paths
    assert "/lastmile.tracking.v1.TrackingService/Track" in paths
    assert "/lastmile.dispatch.v1.OrderService/CreateOrder" in paths
    # A stale name in the list would let nothing through: every entry is a real RPC.
    assert paths >= KNOWN_UNIMPLEMENTED


@pytest.mark.parametrize("rpc", [r for r in RPCS if not r.streams_in], ids=lambda r: r.path)
def test_rpc_answers_bad_input_with_a_proper_status(
    private_platform: Platform,
    seeds: Seeds,
    channel: grpc.Channel,
    summaries: dict[str, Summary],
    rpc: Rpc,
) -> None:
    """Random requests with random credentials to one unary or server-streaming RPC."""
    strategies = MessageStrategies(Pools(seeds.known()))
    summary = summaries.setdefault(rpc.path, Summary())
    examples = SERVER_STREAM_EXAMPLES if rpc.streams_out else UNARY_EXAMPLES

    @settings(HYPOTHESIS, max_examples=examples)
    @given(
        request=strategies.of(rpc.method.input_type),
        extra=unknown_fields(),
        credential=st.sampled_from(CREDENTIAL_MIX),
    )
    def one_call(request: Message, extra: bytes, credential: Credential) -> None:
        payload = request.SerializeToString() + extra
        assume(len(payload) <= MAX_REQUEST_BYTES)
        metadata = metadata_for(private_platform.settings, rpc, credential)
        outcome = call(channel, rpc, payload, metadata)
        summary.examples += 1
        summary.codes[outcome.code.name] += 1
        _check(rpc, outcome, f"{_shown(request)} as {credential}")

    one_call()
    print(summary.line(rpc.path))
    assert_still_serving(
        private_platform.settings, private_platform.addresses, private_platform.edge_address, seeds
    )


def test_edge_numbers_get_a_proper_status(
    private_platform: Platform, seeds: Seeds, channel: grpc.Channel
) -> None:
    """Every numeric, enum and string field of every request (the driver stream's events
    have unit tests) at the ends of its type's range, non-finite, an enum number no enum
    defines, or text empty, over-long (always refused) or with a NUL, called by the role the
    RPC is meant for; the rest of the request empty, then plausible.
    Random examples reach such a value in a field that breaks only by chance: ListOrders
    took status 32767 and answered INTERNAL to 32768 (a SMALLINT column)."""
    settings_, edge = private_platform.settings, private_platform.edge_address
    # Orders of its own (the sweep reschedules and reports on what it names), one assigned and
    # one picked up, so that calls meant for either state get past the state check.
    assigned = assigned_order(settings_, edge, SWEEP_DRIVER)
    picked_up = assigned_order(settings_, edge, SWEEP_DRIVER)
    pick_up(settings_, edge, SWEEP_DRIVER, picked_up.order_id)
    codes: Counter[str] = Counter()
    for rpc in (r for r in RPCS if not r.streams_in):
        metadata = metadata_for(settings_, rpc, Credential.PREFERRED, SWEEP_DRIVER)
        descriptor = rpc.method.input_type
        templates: dict[str, Template | None] = {"empty": None}
        for stage, order in (("assigned", assigned), ("picked up", picked_up)):
            plausible = Plausible(sweep_ids(seeds, SWEEP_DRIVER, order), PICKUP)
            templates[f"plausible, order {stage}"] = plausible.template(descriptor)
        for kind, template in templates.items():
            for shown, value, request in edge_value_requests(descriptor, template):
                outcome = call(channel, rpc, request.SerializeToString(), metadata)
                described = f"{shown} in {_shown(request)} ({kind})"
                _check(rpc, outcome, described)
                if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
                    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, described
                codes[outcome.code.name] += 1
    print(f"edge values: {dict(codes)}")
    assert codes.total() >= 300, codes


def test_driver_events_at_edge_values_are_each_answered(
    private_platform: Platform, seeds: Seeds, channel: grpc.Channel
) -> None:
    """Every numeric, enum and string field of every driver event at the sweep's edge values,
    the rest plausible (about the driver's own picked-up order), on one stream of that driver:
    each event gets its Ack or a Reject with a message, over-long text is refused, and the
    consumers behind the gateway take the accepted ones without a traceback (the platform's
    logs are checked at the end of the module)."""
    settings_, edge = private_platform.settings, private_platform.edge_address
    assigned = assigned_order(settings_, edge, EVENTS_DRIVER)
    pick_up(settings_, edge, EVENTS_DRIVER, assigned.order_id)
    plausible = Plausible(sweep_ids(seeds, EVENTS_DRIVER, assigned), PICKUP)
    rpc = next(r for r in RPCS if r.path.endswith("DriverGatewayService/Connect"))
    descriptor = rpc.method.input_type
    events: list[tuple[EdgeRequest, Message]] = []
    for edge_request in edge_value_requests(descriptor, plausible.template(descriptor)):
        event: Any = edge_request.request
        if event.WhichOneof("event") in (None, "hello") or edge_request.shown.startswith("seq"):
            continue  # Hello and sequence numbers have tests of their own
        event.seq = len(events) + 1
        events.append((edge_request, event))
    payloads = [hello().SerializeToString(), *(e.SerializeToString() for _, e in events)]
    metadata = metadata_for(settings_, rpc, Credential.DRIVER, EVENTS_DRIVER)
    outcome = connect(channel, rpc, payloads, metadata)
    assert outcome.code == grpc.StatusCode.OK, outcome
    answers: dict[int, Any] = {}
    for response in outcome.responses:
        kind = _kind(response)
        if kind in ("ack", "reject"):
            answers[getattr(response, kind).seq] = response
    assert len(answers) == len(events) > 80, (len(answers), len(events))
    kinds: Counter[str] = Counter()
    for edge_request, event in events:
        answer = answers[event.seq]
        shown = f"{edge_request.shown} in {_shown(event)}"
        kinds[_kind(answer)] += 1
        if _kind(answer) == "reject":
            assert answer.reject.message.strip(), f"a Reject without a message for {shown}"
        value = edge_request.value
        if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
            assert _kind(answer) == "reject", shown
    print(f"driver events at edge values: {dict(kinds)}")
    assert kinds["ack"] > 0 and kinds["reject"] > 0, kinds
    assert_still_serving(settings_, private_platform.addresses, edge, seeds)


def test_bytes_that_are_no_message_are_invalid_argument(
    private_platform: Platform, channel: grpc.Channel
) -> None:
    """Every RPC sent bytes that parse as no message answers INVALID_ARGUMENT (grpc alone
    answers UNKNOWN). The driver stream answers the events before them, then ends with
    INVALID_ARGUMENT (not UNAVAILABLE, which tells the app to reconnect and send it again),
    and what it acked stays accepted."""
    settings_ = private_platform.settings
    for rpc in (r for r in RPCS if not r.streams_in):
        metadata = metadata_for(settings_, rpc, Credential.PREFERRED, GARBLED_DRIVER)
        outcome = call(channel, rpc, NOT_A_MESSAGE, metadata)
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, (rpc.path, outcome)
        assert outcome.details.startswith("the request is not a valid message"), outcome
    rpc = next(r for r in RPCS if r.path.endswith("DriverGatewayService/Connect"))
    metadata = metadata_for(settings_, rpc, Credential.DRIVER, GARBLED_DRIVER)
    event = good_event()
    event.seq = 1
    payloads = [hello().SerializeToString(), event.SerializeToString(), NOT_A_MESSAGE]
    outcome = connect(channel, rpc, payloads, metadata)
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome
    assert "not a valid message" in outcome.details, outcome
    # Pushes (a tracking config, a route) may come in between; the answers are what counts.
    kinds = [_kind(r) for r in outcome.responses]
    assert kinds[0] == "welcome" and [k for k in kinds if k in ("ack", "reject")] == ["ack"], kinds
    again = connect(channel, rpc, [hello().SerializeToString()], metadata)
    assert again.code == grpc.StatusCode.OK, again
    welcome: Any = again.responses[0]
    assert welcome.welcome.last_acked_seq == 1, welcome


@pytest.mark.parametrize("rpc", [r for r in RPCS if r.streams_in], ids=lambda r: r.path)
def test_stream_answers_bad_input_with_a_proper_status(
    private_platform: Platform,
    seeds: Seeds,
    channel: grpc.Channel,
    summaries: dict[str, Summary],
    rpc: Rpc,
) -> None:
    """A client stream (the driver's Connect): mostly a valid Hello, then random events; each
    event is answered (Ack or Reject with a message) and the stream ends cleanly."""
    strategies = MessageStrategies(Pools(seeds.known()))
    request = strategies.of(rpc.method.input_type)
    summary = summaries.setdefault(rpc.path, Summary())
    first_is_hello = rpc.path.endswith("DriverGatewayService/Connect")
    firsts = st.one_of(st.just(hello()), st.just(hello()), request) if first_is_hello else request
    if first_is_hello:
        request = st.one_of(request, st.just(good_event()))
    numbered = "seq" in rpc.method.input_type.fields_by_name

    @settings(HYPOTHESIS, max_examples=CLIENT_STREAM_EXAMPLES)
    @given(
        first=firsts,
        events=st.lists(request, max_size=MAX_EVENTS_PER_STREAM),
        in_order=st.booleans(),
        credential=st.sampled_from(CREDENTIAL_MIX),
    )
    def one_stream(
        first: Message, events: list[Message], in_order: bool, credential: Credential
    ) -> None:
        driver = LOOSE_DRIVER
        if in_order and numbered:
            # Numbered as a well-behaved app would, so that content decides the answer.
            events = [_numbered(event, next(SEQUENCE)) for event in events]
            driver = SEED_DRIVER
        payloads = [m.SerializeToString() for m in (first, *events)]
        assume(sum(len(p) for p in payloads) <= MAX_REQUEST_BYTES)
        metadata = metadata_for(private_platform.settings, rpc, credential, driver)
        outcome = connect(channel, rpc, payloads, metadata)
        summary.examples += 1
        summary.codes[outcome.code.name] += 1
        summary.answers.update(_kind(r) for r in outcome.responses)
        shown = f"{[_shown(m) for m in (first, *events)]} as {credential} of {driver}"
        _check(rpc, outcome, shown)
        if first_is_hello and outcome.code == grpc.StatusCode.OK and first == hello():
            _check_driver_answers(outcome, len(events), shown)

    one_stream()
    print(summary.line(rpc.path))
    if first_is_hello:
        # Proof that random events got past the stream's checks into ingest, and were refused.
        assert summary.answers["ack"] > 0 and summary.answers["reject"] > 0, summary
    assert_still_serving(
        private_platform.settings, private_platform.addresses, private_platform.edge_address, seeds
    )


def _kind(response: Message) -> str:
    oneofs = response.DESCRIPTOR.oneofs
    return str(response.WhichOneof(oneofs[0].name)) if oneofs else "message"


def _numbered(event: Message, seq: int) -> Message:
    copy = type(event)()
    copy.CopyFrom(event)
    # A merge overwrites the non-zero scalars it carries: only the sequence number.
    copy.MergeFrom(type(event)(seq=seq))
    return copy


def _check_driver_answers(outcome: Outcome, events: int, shown: str) -> None:
    responses: list[Any] = outcome.responses
    kinds = [r.WhichOneof("command") for r in responses]
    assert kinds[:1] == ["welcome"], f"{kinds} for {shown}"
    answers = [r for r in responses if r.WhichOneof("command") in ("ack", "reject")]
    assert len(answers) == events, f"{events} events, answers {kinds} for {shown}"
    for answer in answers:
        if answer.WhichOneof("command") == "reject":
            assert answer.reject.message.strip(), f"a Reject without a message for {shown}"
