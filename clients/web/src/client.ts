// Typed grpc-web clients for the browser-facing lastmile services, reached through the Envoy edge.
//
// Left out on purpose: lastmile.driver.v1.DriverGatewayService. Its only RPC (Connect) is a
// bidirectional stream, and grpc-web over fetch can only do unary and server-streaming calls
// (browsers cannot stream a request body). Driver apps talk native gRPC to that service instead.
import type { DescService } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { DispatchService } from "./gen/lastmile/dispatch/v1/dispatch_service_pb.js";
import { OrderService } from "./gen/lastmile/dispatch/v1/order_service_pb.js";
import { WebhookService } from "./gen/lastmile/integration/v1/integration_service_pb.js";
import { OriginService } from "./gen/lastmile/origin/v1/origin_service_pb.js";
import { ProofOfDeliveryService } from "./gen/lastmile/pod/v1/pod_service_pb.js";
import { FleetService } from "./gen/lastmile/tracking/v1/fleet_service_pb.js";
import { TrackingService } from "./gen/lastmile/tracking/v1/tracking_service_pb.js";

/** A bearer token, or a function returning the current one (called before every request). */
export type TokenSource = string | (() => string | undefined | Promise<string | undefined>);

export interface EdgeTransportOptions {
  /** Sent as `authorization: Bearer <token>` when set (and non-empty). */
  token?: TokenSource;
  /** Extra interceptors, run after the auth interceptor. */
  interceptors?: Interceptor[];
  /** Default deadline for every call, in milliseconds (sent as grpc-timeout). */
  defaultTimeoutMs?: number;
  /** Override fetch, e.g. to set `credentials: "include"` or to observe responses. */
  fetch?: typeof globalThis.fetch;
}

/** Interceptor that adds `authorization: Bearer <token>` to every request. */
export function bearerAuth(token: TokenSource): Interceptor {
  return (next) => async (req) => {
    const value = typeof token === "function" ? await token() : token;
    if (value) {
      req.header.set("authorization", `Bearer ${value}`);
    }
    return next(req);
  };
}

/** grpc-web transport (binary protobuf) against the Envoy edge at `baseUrl`, e.g. "https://edge.example.com". */
export function createEdgeTransport(baseUrl: string, options: EdgeTransportOptions = {}): Transport {
  const interceptors: Interceptor[] = [];
  if (options.token !== undefined) {
    interceptors.push(bearerAuth(options.token));
  }
  interceptors.push(...(options.interceptors ?? []));
  return createGrpcWebTransport({
    baseUrl,
    useBinaryFormat: true,
    interceptors,
    ...(options.defaultTimeoutMs !== undefined ? { defaultTimeoutMs: options.defaultTimeoutMs } : {}),
    ...(options.fetch !== undefined ? { fetch: options.fetch } : {}),
  });
}

/** The browser-facing services, keyed by the client name used in app code. */
export const browserServices = {
  tracking: TrackingService,
  fleet: FleetService,
  orders: OrderService,
  dispatch: DispatchService,
  proofOfDelivery: ProofOfDeliveryService,
  origin: OriginService,
  webhooks: WebhookService,
} as const satisfies Record<string, DescService>;

export type LastmileClients = {
  [K in keyof typeof browserServices]: Client<(typeof browserServices)[K]>;
};

/** One typed client per browser-facing service, all sharing a single grpc-web transport. */
export function createClients(baseUrl: string, options: EdgeTransportOptions = {}): LastmileClients {
  return createClientsForTransport(createEdgeTransport(baseUrl, options));
}

/** Same as createClients, for a transport built elsewhere (tests, custom fetch). */
export function createClientsForTransport(transport: Transport): LastmileClients {
  return {
    tracking: createClient(TrackingService, transport),
    fleet: createClient(FleetService, transport),
    orders: createClient(OrderService, transport),
    dispatch: createClient(DispatchService, transport),
    proofOfDelivery: createClient(ProofOfDeliveryService, transport),
    origin: createClient(OriginService, transport),
    webhooks: createClient(WebhookService, transport),
  };
}

export {
  DispatchService,
  FleetService,
  OrderService,
  OriginService,
  ProofOfDeliveryService,
  TrackingService,
  WebhookService,
};
