import { randomUUID } from 'node:crypto';

/** Transport names are short lowercase words; they prefix every request id of their transport. */
const TRANSPORT_NAME = /^[a-z][a-z0-9]{0,15}$/;

export function isTransportName(name: string): boolean {
  return TRANSPORT_NAME.test(name);
}

/** A request id: `<transport>-<uuid>` (e.g. `http-3f2c…`), unique across the service's lifetime. */
export function newRequestId(transport: string): string {
  if (!isTransportName(transport)) throw new Error(`invalid transport name "${transport}"`);
  return `${transport}-${randomUUID()}`;
}

/** The transport a request id was created for (null for an id not made by newRequestId). */
export function transportOf(requestId: string): string | null {
  const dash = requestId.indexOf('-');
  const name = dash > 0 ? requestId.slice(0, dash) : '';
  return isTransportName(name) ? name : null;
}
