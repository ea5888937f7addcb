// What both apps need to reach the platform: the token from the URL fragment and typed
// grpc-web clients against the page's own origin (Envoy serves pages and grpc-web together).
import { Code, ConnectError } from "@connectrpc/connect";

import { createClients, type LastmileClients } from "../../src/client.js";

/** A value of the URL fragment (`#token=...&x=...`): fragments never reach server logs. */
export function fragmentParam(name: string): string | undefined {
  const value = new URLSearchParams(window.location.hash.slice(1)).get(name);
  return value === null || value === "" ? undefined : value;
}

/** Clients for the edge this page was served from; `bearer` is sent as Authorization. */
export function edgeClients(bearer?: string): LastmileClients {
  return createClients(window.location.origin, bearer ? { token: bearer } : {});
}

/** A short, human message for a failed call ("Not allowed: ..."), never a stack trace. */
export function describeError(error: unknown): string {
  const failure = ConnectError.from(error);
  const label: Partial<Record<Code, string>> = {
    [Code.Unauthenticated]: "Not signed in or link expired",
    [Code.PermissionDenied]: "Not allowed",
    [Code.FailedPrecondition]: "Not possible now",
    [Code.InvalidArgument]: "Invalid input",
    [Code.NotFound]: "Not found",
    [Code.Unimplemented]: "Not available yet on this platform",
    [Code.Unavailable]: "Service unavailable",
  };
  return `${label[failure.code] ?? Code[failure.code]}: ${failure.rawMessage}`;
}

/** Whether an error means "stop trying" (bad or expired credentials) rather than "retry". */
export function isFinal(error: unknown): boolean {
  const code = ConnectError.from(error).code;
  return code === Code.Unauthenticated || code === Code.PermissionDenied || code === Code.NotFound;
}

/** Whether the error is our own cancellation (page closing, view switched). */
export function isCancel(error: unknown): boolean {
  return ConnectError.from(error).code === Code.Canceled;
}
