// Dispatcher dashboard: /dashboard/#token=<dispatcher token>. The whole fleet live, origins,
// one driver's orders and route, the order list with reassignment, area search, live feed,
// the day's ETA accuracy, the tenant's tracking intervals.
import { timestampDate } from "@bufbuild/protobuf/wkt";

import type { LastmileClients } from "../../src/client.js";
import { DriverStatus } from "../../src/gen/lastmile/common/v1/common_pb.js";
import { describeError, edgeClients, fragmentParam } from "../shared/api.js";
import { createBaseMap, L } from "../shared/basemap.js";
import { clock, driverStatusLabel, esc } from "../shared/labels.js";
import { PolygonDrawer } from "./draw.js";
import { showEtaAccuracy } from "./eta.js";
import { LiveFeed } from "./feed.js";
import { FleetLayer } from "./fleet.js";
import { OrderPanel, orderRow } from "./orders.js";
import { TrackingPanel } from "./tracking.js";
import "./style.css";

const REFRESH_MS = 30_000;
// A day's ETA accuracy moves slowly, and each report reads all of the day's ETAs.
const ETA_ACCURACY_REFRESH_MS = 300_000;
// Order events arrive in bursts: reload the list at most this often.
const EVENT_REFRESH_MS = 2000;

function el<T extends HTMLElement>(id: string): T {
  return document.getElementById(id) as T;
}

declare global {
  interface Window {
    /** The Leaflet map, for automation and debugging from the console. */
    dashboardMap?: L.Map;
  }
}

async function frameCity(map: L.Map): Promise<void> {
  const response = await fetch("/roads/bounds");
  if (!response.ok) return;
  const [minLng, minLat, maxLng, maxLat] = (await response.json()) as number[];
  if (minLng === undefined || minLat === undefined || maxLng === undefined || maxLat === undefined) return;
  map.fitBounds([[minLat, minLng], [maxLat, maxLng]]);
}

async function showOrigins(api: LastmileClients, map: L.Map): Promise<void> {
  const icon = L.divIcon({ className: "", html: '<div class="origin-pin"></div>', iconSize: [14, 14] });
  let pageToken = "";
  do {
    const page = await api.origin.listOrigins({ pageSize: 200, pageToken });
    for (const origin of page.origins) {
      const at = origin.address?.location;
      if (at === undefined) continue;
      L.marker([at.lat, at.lng], { icon, title: origin.name, keyboard: false })
        .bindTooltip(`${origin.name} (origin)`)
        .addTo(map);
    }
    pageToken = page.nextPageToken;
  } while (pageToken);
}

class DriverPanel {
  private route: L.LayerGroup;

  constructor(
    private readonly api: LastmileClients,
    map: L.Map,
  ) {
    this.route = L.layerGroup().addTo(map);
  }

  /** State, orders and route of one driver. */
  async show(driverId: string): Promise<void> {
    el("driver").hidden = false;
    el("driver-title").textContent = `Driver ${driverId}`;
    this.route.clearLayers();
    el("driver-route").dataset.routeId = "";
    try {
      const { driver } = await this.api.fleet.getDriverState({ driverId });
      const since = driver?.statusSince ? ` since ${clock(timestampDate(driver.statusSince))}` : "";
      const seen = driver?.positionAt ? `, seen ${clock(timestampDate(driver.positionAt))}` : "";
      el("driver-title").textContent = driver?.name ? `${driver.name} (${driverId})` : `Driver ${driverId}`;
      el("driver-state").textContent = `${driverStatusLabel(driver?.status ?? DriverStatus.UNSPECIFIED)}${since}${seen}`;
    } catch (error) {
      el("driver-state").textContent = describeError(error);
    }
    try {
      const { orders } = await this.api.orders.listOrders({ driverId, pageSize: 50 });
      el("driver-orders").innerHTML = orders.length ? orders.map(orderRow).join("") : '<li class="muted">No orders.</li>';
    } catch (error) {
      el("driver-orders").innerHTML = `<li class="muted">${esc(describeError(error))}</li>`;
    }
    await this.showRoute(driverId);
  }

  private async showRoute(driverId: string): Promise<void> {
    try {
      const { route } = await this.api.dispatch.getRoute({ key: { case: "driverId", value: driverId } });
      if (route === undefined) throw new Error("no route");
      for (const leg of route.legs) {
        L.polyline(leg.geometry.map((p) => L.latLng(p.lat, p.lng)), { color: "#1d4ed8", weight: 4, opacity: 0.7, className: "route-leg" }).addTo(this.route);
      }
      el("driver-route").dataset.routeId = route.routeId;
      const next = route.stops.find((stop) => !stop.completed);
      const eta = next?.plannedArrival ? `next stop around ${clock(timestampDate(next.plannedArrival))}` : "no open stops";
      el("driver-route").textContent = `Route: ${route.stops.length} stops, ${(route.distanceM / 1000).toFixed(1)} km; ${eta}`;
    } catch (error) {
      el("driver-route").textContent = `Route: ${describeError(error)}`;
    }
  }
}

async function search(api: LastmileClients, fleet: FleetLayer, corners: L.LatLng[]): Promise<void> {
  el("search").hidden = false;
  const list = el("search-results");
  list.innerHTML = '<li class="muted">Searching…</li>';
  try {
    const response = await api.fleet.searchDrivers({
      area: { case: "polygon", value: { vertices: corners.map((c) => ({ lat: c.lat, lng: c.lng })) } },
      limit: 1000,
    });
    const found = response.drivers.flatMap((match) => (match.driver ? [match.driver] : []));
    fleet.highlight(found.map((d) => d.driverId));
    el("search-count").textContent = `(${found.length})`;
    list.innerHTML = found.length
      ? found.map((d) => `<li data-driver-id="${esc(d.driverId)}">${esc(d.name || d.driverId)} · ${driverStatusLabel(d.status)}</li>`).join("")
      : '<li class="muted">No drivers in this area.</li>';
  } catch (error) {
    list.innerHTML = `<li class="muted">${esc(describeError(error))}</li>`;
  }
}

function start(): void {
  const token = fragmentParam("token");
  if (token === undefined) {
    el("connection").textContent = "Open this page with #token=<dispatcher token> (lastmile up prints the link).";
    return;
  }
  const api = edgeClients(token);
  const map = createBaseMap(el("map"), [0, 0], 2);
  window.dashboardMap = map;
  void frameCity(map);
  const setConnection = (text: string): void => {
    el("connection").textContent = text;
  };
  const drivers = new DriverPanel(api, map);
  const updateCounts = (): void => {
    const all = [...fleet.drivers.values()];
    el("count-idle").textContent = String(all.filter((d) => d.status === DriverStatus.IDLE).length);
    el("count-drivers").textContent = String(all.filter((d) => d.status !== DriverStatus.OFFLINE).length);
  };
  const fleet = new FleetLayer(map, (id) => void drivers.show(id), updateCounts);
  const orders = new OrderPanel(api, () => [...fleet.drivers.keys()].sort());
  const drawer = new PolygonDrawer(
    map,
    (corners) => void search(api, fleet, corners),
    (drawing) => {
      el("draw").classList.toggle("active", drawing);
      el("draw").textContent = drawing ? "Cancel area search" : "Search drivers in an area";
      el("draw-hint").hidden = !drawing;
      el("map").classList.toggle("drawing", drawing);
    },
  );
  el("draw").addEventListener("click", () => (drawer.drawing ? drawer.stop() : drawer.start()));
  let pending: ReturnType<typeof setTimeout> | undefined;
  const feed = new LiveFeed(api, el("feed"), () => {
    pending ??= setTimeout(() => {
      pending = undefined;
      void orders.refresh();
    }, EVENT_REFRESH_MS);
  });
  fleet.watch(api, setConnection).catch((error: unknown) => setConnection(describeError(error)));
  feed.start();
  void orders.refresh();
  setInterval(() => void orders.refresh(), REFRESH_MS);
  void showEtaAccuracy(api, el("eta-accuracy"));
  setInterval(() => void showEtaAccuracy(api, el("eta-accuracy")), ETA_ACCURACY_REFRESH_MS);
  void new TrackingPanel(api, el("tracking"), el("tracking-result")).load();
  showOrigins(api, map).catch((error: unknown) => setConnection(`Origins: ${describeError(error)}`));
}

start();
