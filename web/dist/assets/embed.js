(()=>{let n=document.currentScript;if(!n?.src)return;let s=new URL("../?embed=1",n.src).toString(),o=n.dataset.label||"Chat",i=n.dataset.position==="left",d=document.createElement("div"),a=d.attachShadow({mode:"open"}),r=new CSSStyleSheet;r.replaceSync(`
    :host { all: initial; }
    .btn { position: fixed; bottom: 20px; ${i?"left":"right"}: 20px; z-index: 2147483000;
      font: 600 15px system-ui, sans-serif; color: #fff; background: #0b57d0; border: 0; border-radius: 24px;
      padding: 12px 18px; box-shadow: 0 4px 16px rgba(0,0,0,.25); cursor: pointer; }
    .btn:focus-visible { outline: 3px solid #8ab4f8; outline-offset: 2px; }
    .panel { position: fixed; bottom: 76px; ${i?"left":"right"}: 20px; z-index: 2147483000;
      width: min(420px, calc(100vw - 40px)); height: min(640px, calc(100vh - 110px)); border: 0;
      border-radius: 14px; box-shadow: 0 8px 32px rgba(0,0,0,.3); background: #fff; }
    .panel[hidden] { display: none; }`),a.adoptedStyleSheets=[r];let e=document.createElement("button");e.className="btn",e.type="button",e.textContent=o,e.setAttribute("aria-expanded","false");let t=document.createElement("iframe");t.className="panel",t.title=o,t.hidden=!0,t.setAttribute("allow","clipboard-write"),e.addEventListener("click",()=>{t.src||(t.src=s),t.hidden=!t.hidden,e.setAttribute("aria-expanded",String(!t.hidden)),t.hidden||t.focus()}),a.append(e,t),document.body.appendChild(d)})();
