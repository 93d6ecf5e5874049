// Entry point: read the configuration, then start the page.

import { App } from "./app.ts";
import { loadConfig } from "./config.ts";

async function main(): Promise<void> {
  const mount = document.getElementById("app");
  if (!mount) return;
  try {
    const config = await loadConfig();
    await new App(config).start(mount);
  } catch (e) {
    const p = document.createElement("p");
    p.className = "fatal";
    p.setAttribute("role", "alert");
    p.textContent = `The chat could not start: ${(e as Error).message}`;
    mount.replaceChildren(p);
  }
}

void main();
