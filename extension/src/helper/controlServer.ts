// Serves the helper protocol on the control socket (shared/controlSocket.ts)
// for one engine, so `nke status|verdict|export|extcap` from a terminal or
// from Wireshark reach the helper that owns the filter. Refuses to take over
// a socket another live helper answers on.
import fs from 'node:fs';
import { connectControl, controlDir, controlPaths } from '../shared/controlSocket';
import { newToken, TokenServer } from '../shared/tokenSocket';
import type { FilterEngine } from './engine';
import { serveHelperProtocol } from './service';

export class ControlBusyError extends Error {}

export interface ControlServer {
  readonly socketPath: string;
  close(): void;
}

export async function serveControl(engine: FilterEngine): Promise<ControlServer> {
  const dir = controlDir(true);
  const paths = controlPaths(dir);
  if (fs.existsSync(paths.socket)) {
    // Another helper may be alive; if it answers, it keeps the socket.
    const other = await connectControl().catch(() => undefined);
    if (other) {
      other.dispose();
      throw new ControlBusyError(
        `another nke helper (watch, run or a VS Code window) serves ${paths.socket}`,
      );
    }
    fs.rmSync(paths.socket, { force: true });
  }
  const token = newToken();
  fs.writeFileSync(paths.token, token, { mode: 0o600 });
  // Reusable: every `nke` command connects with the same token file.
  const server = new TokenServer(paths.socket, token, true);
  await server.listen();
  server.on('connection', (conn) => {
    const unwire = serveHelperProtocol(conn, engine);
    conn.onClose(unwire);
    conn.listen();
  });
  return {
    socketPath: paths.socket,
    close: () => {
      server.close();
      // Only ours: a newer helper may have written its own token meanwhile.
      try {
        if (fs.readFileSync(paths.token, 'utf8') === token) fs.rmSync(paths.token, { force: true });
      } catch {
        // already gone
      }
    },
  };
}
