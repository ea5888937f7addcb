// Smoke check used by the Python integration tests:
//
//   node clients/web/dist/smoke.js <edgeBaseUrl> [--token T] [--timeout-ms N]
//
// Calls TrackingService.GetTracking over grpc-web through the Envoy edge and prints one JSON line:
//   {"service": "lastmile.tracking.v1.TrackingService", "method": "GetTracking",
//    "ok": bool, "code": "ok" | "<connect code name>", "message": "..."}
// Code names are the Connect/gRPC names in snake_case: "unimplemented", "not_found", ...
//
// Exit codes: 0 = the call finished with a gRPC status carried by a grpc-web response (any status);
//             2 = transport failure (connection refused, DNS, timeout before any response) or the
//                 edge answered with something that is not grpc-web (e.g. a plain HTTP 404 page);
//             64 = bad usage.
import { Code, ConnectError } from "@connectrpc/connect";

import { createClientsForTransport, createEdgeTransport } from "./client.js";
import { TrackingService } from "./gen/lastmile/tracking/v1/tracking_service_pb.js";

const SERVICE = TrackingService.typeName;
const METHOD = TrackingService.method.getTracking.name;

interface Args {
  baseUrl: string;
  token?: string;
  timeoutMs: number;
}

function usage(problem: string): never {
  process.stderr.write(`smoke: ${problem}\nusage: node smoke.js <edgeBaseUrl> [--token T] [--timeout-ms N]\n`);
  process.exit(64);
}

function parseArgs(argv: string[]): Args {
  let baseUrl: string | undefined;
  let token: string | undefined;
  let timeoutMs = 10_000;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--token") {
      token = argv[++i] ?? usage("--token needs a value");
    } else if (arg === "--timeout-ms") {
      timeoutMs = Number(argv[++i]);
      if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) usage("--timeout-ms needs a positive number");
    } else if (arg !== undefined && !arg.startsWith("--") && baseUrl === undefined) {
      baseUrl = arg;
    } else {
      usage(`unexpected argument ${JSON.stringify(arg)}`);
    }
  }
  if (baseUrl === undefined) usage("missing <edgeBaseUrl>");
  return { baseUrl, timeoutMs, ...(token !== undefined ? { token } : {}) };
}

/** Code.NotFound -> "not_found" (the Connect protocol spelling, which matches gRPC names lowercased). */
function codeName(code: Code): string {
  return (Code[code] ?? String(code)).replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

function report(ok: boolean, code: string, message: string): void {
  process.stdout.write(JSON.stringify({ service: SERVICE, method: METHOD, ok, code, message }) + "\n");
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));

  // Watch the raw exchange so a real grpc-web status can be told apart from a network failure
  // or a non-gRPC HTTP answer (connect-web maps both to error codes too).
  let fetchError: unknown;
  let response: { status: number; contentType: string; grpcStatus: string | null } | undefined;
  const observingFetch: typeof globalThis.fetch = async (input, init) => {
    try {
      const res = await globalThis.fetch(input, init);
      response = {
        status: res.status,
        contentType: res.headers.get("content-type") ?? "",
        grpcStatus: res.headers.get("grpc-status"),
      };
      return res;
    } catch (err) {
      fetchError = err;
      throw err;
    }
  };

  const transport = createEdgeTransport(args.baseUrl, {
    fetch: observingFetch,
    defaultTimeoutMs: args.timeoutMs,
    ...(args.token !== undefined ? { token: args.token } : {}),
  });
  const { tracking } = createClientsForTransport(transport);

  try {
    await tracking.getTracking({ trackingToken: "smoke-test-token" });
    report(true, "ok", "");
    return 0;
  } catch (err) {
    const ce = ConnectError.from(err);
    if (response === undefined) {
      const cause = fetchError ?? err;
      const detail = cause instanceof Error ? `${cause.message}${causeSuffix(cause)}` : String(cause);
      report(false, codeName(ce.code), `transport error: ${detail}`);
      return 2;
    }
    const isGrpcWeb = response.contentType.startsWith("application/grpc") || response.grpcStatus !== null;
    if (!isGrpcWeb) {
      report(
        false,
        codeName(ce.code),
        `not a grpc-web response: HTTP ${response.status} ${response.contentType || "(no content-type)"}`,
      );
      return 2;
    }
    report(false, codeName(ce.code), ce.rawMessage);
    return 0;
  }
}

function causeSuffix(err: Error): string {
  const cause = (err as { cause?: unknown }).cause;
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code;
    return `: ${typeof code === "string" ? `${code} ` : ""}${cause.message}`;
  }
  return "";
}

main().then(
  (exitCode) => {
    process.exitCode = exitCode;
  },
  (err: unknown) => {
    process.stderr.write(`smoke: unexpected failure: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 2;
  },
);
