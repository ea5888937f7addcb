// The base map of both apps, drawn in the browser from the platform's own road data
// (GET /roads, from the city's OSM extract): no tile server, works with no internet.
import * as L from "leaflet";
import "leaflet/dist/leaflet.css";

/** Lines per road class: wide and dark for main roads, thin and light for service roads. */
const STYLE: Record<string, { width: number; colour: string }> = {
  motorway: { width: 4, colour: "#c2410c" },
  trunk: { width: 4, colour: "#c2410c" },
  primary: { width: 3.5, colour: "#d97706" },
  secondary: { width: 3, colour: "#ca8a04" },
  tertiary: { width: 2.5, colour: "#a8a29e" },
};
const MINOR = { width: 1.5, colour: "#b8b2a7" };
const ATTRIBUTION = "© OpenStreetMap contributors";
// Roads are fetched once per tile; beyond this zoom the z16 data is detailed enough.
const MAX_DATA_ZOOM = 16;

interface RoadFeature {
  properties: { kind: string };
  geometry: { coordinates: [number, number][] };
}

/** A canvas tile layer drawing /roads answers; each tile fetches its own box once. */
class RoadLayer extends L.GridLayer {
  override createTile(coords: L.Coords, done: L.DoneCallback): HTMLElement {
    const tile = document.createElement("canvas");
    const size = this.getTileSize();
    const ratio = window.devicePixelRatio || 1;
    tile.width = size.x * ratio;
    tile.height = size.y * ratio;
    void this.draw(tile, coords, ratio).then(
      () => done(undefined, tile),
      (error: unknown) => done(error instanceof Error ? error : new Error(String(error)), tile),
    );
    return tile;
  }

  private async draw(tile: HTMLCanvasElement, coords: L.Coords, ratio: number): Promise<void> {
    const map = this._map;
    const size = this.getTileSize();
    const origin = L.point(coords.x * size.x, coords.y * size.y);
    const nw = map.unproject(origin, coords.z);
    const se = map.unproject(origin.add(size), coords.z);
    const bbox = [nw.lng, se.lat, se.lng, nw.lat].map((v) => v.toFixed(6)).join(",");
    const zoom = Math.min(coords.z, MAX_DATA_ZOOM);
    const response = await fetch(`/roads?bbox=${bbox}&zoom=${zoom}`);
    if (!response.ok) {
      throw new Error(`roads: HTTP ${response.status}`);
    }
    const data = (await response.json()) as { features: RoadFeature[] };
    const ctx = tile.getContext("2d");
    if (ctx === null) return;
    ctx.scale(ratio, ratio);
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    const scale = Math.max(0.6, (coords.z - 11) / 4);
    // Minor roads first so main roads are drawn on top.
    const ordered = [...data.features].sort((a, b) => rank(a) - rank(b));
    for (const feature of ordered) {
      const style = STYLE[feature.properties.kind] ?? MINOR;
      ctx.strokeStyle = style.colour;
      ctx.lineWidth = style.width * scale;
      ctx.beginPath();
      feature.geometry.coordinates.forEach(([lng, lat], i) => {
        const p = map.project([lat, lng], coords.z).subtract(origin);
        if (i === 0) ctx.moveTo(p.x, p.y);
        else ctx.lineTo(p.x, p.y);
      });
      ctx.stroke();
    }
  }
}

function rank(feature: RoadFeature): number {
  return feature.properties.kind in STYLE ? 1 : 0;
}

/** A Leaflet map in `element` with the road base map and the OSM attribution. */
export function createBaseMap(element: HTMLElement, center: L.LatLngExpression, zoom: number): L.Map {
  const map = L.map(element, { center, zoom, minZoom: 9, maxZoom: 19, preferCanvas: false });
  map.attributionControl.setPrefix(false);
  new RoadLayer({ attribution: ATTRIBUTION, maxZoom: 19, updateWhenZooming: false }).addTo(map);
  return map;
}

export { L };
