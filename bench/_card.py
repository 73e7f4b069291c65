"""The benchmark's OG card: gradient, 64px bold title, subtitle, price, a round
avatar fetched through the outbound guard, and an emoji."""

CARD_HTML = """<!doctype html><html><head><style>
  html, body { margin: 0; }
  .card { width: 1200px; height: 630px; box-sizing: border-box; padding: 72px;
          background: linear-gradient(135deg, #4f46e5 0%, #9333ea 50%, #db2777 100%);
          color: #fff; font-family: 'Noto Sans', sans-serif; position: relative; }
  h1 { font-size: 64px; font-weight: 700; margin: 0 0 24px; line-height: 1.1; }
  p { font-size: 32px; margin: 0; opacity: .9; }
  .price { position: absolute; right: 72px; bottom: 72px; font-size: 56px; font-weight: 700;
           background: rgba(0,0,0,.25); padding: 8px 28px; border-radius: 16px; }
  .avatar { position: absolute; left: 72px; bottom: 72px; width: 120px; height: 120px;
            border-radius: 50%; border: 6px solid #fff; object-fit: cover; }
</style></head><body><div class="card">
  <h1>{{ title }} 🚀</h1>
  <p>{{ subtitle }}</p>
  <img class="avatar" src="{{ avatar }}">
  <div class="price">{{ price }}</div>
</div></body></html>"""
