// The embed script an allowed site includes to show the chat as a panel:
//
//   <script src="https://AGENT/channels/NAME/assets/embed.js" async
//           data-label="Chat with us" data-position="right"></script>
//
// It adds a button that opens the chat page (same channel) in an iframe. The
// page itself runs in the agent's origin, so the host site never sees the
// conversation or the visitor cookie; the runtime lets only the channel's
// `allowedOrigins` frame it (CSP frame-ancestors).

(() => {
  const script = document.currentScript as HTMLScriptElement | null;
  if (!script?.src) return;
  const chatUrl = new URL("../?embed=1", script.src).toString();
  const label = script.dataset.label || "Chat";
  const left = script.dataset.position === "left";
  const host = document.createElement("div");
  // A shadow root keeps the host page's styles out of the widget and ours out of the page.
  const root = host.attachShadow({ mode: "open" });
  // A constructed stylesheet: allowed under a host page's strict CSP, unlike a <style> element.
  const sheet = new CSSStyleSheet();
  sheet.replaceSync(`
    :host { all: initial; }
    .btn { position: fixed; bottom: 20px; ${left ? "left" : "right"}: 20px; z-index: 2147483000;
      font: 600 15px system-ui, sans-serif; color: #fff; background: #0b57d0; border: 0; border-radius: 24px;
      padding: 12px 18px; box-shadow: 0 4px 16px rgba(0,0,0,.25); cursor: pointer; }
    .btn:focus-visible { outline: 3px solid #8ab4f8; outline-offset: 2px; }
    .panel { position: fixed; bottom: 76px; ${left ? "left" : "right"}: 20px; z-index: 2147483000;
      width: min(420px, calc(100vw - 40px)); height: min(640px, calc(100vh - 110px)); border: 0;
      border-radius: 14px; box-shadow: 0 8px 32px rgba(0,0,0,.3); background: #fff; }
    .panel[hidden] { display: none; }`);
  root.adoptedStyleSheets = [sheet];
  const button = document.createElement("button");
  button.className = "btn";
  button.type = "button";
  button.textContent = label;
  button.setAttribute("aria-expanded", "false");
  const frame = document.createElement("iframe");
  frame.className = "panel";
  frame.title = label;
  frame.hidden = true;
  frame.setAttribute("allow", "clipboard-write");
  button.addEventListener("click", () => {
    if (!frame.src) frame.src = chatUrl; // loaded on first open only
    frame.hidden = !frame.hidden;
    button.setAttribute("aria-expanded", String(!frame.hidden));
    if (!frame.hidden) frame.focus();
  });
  root.append(button, frame);
  document.body.appendChild(host);
})();
