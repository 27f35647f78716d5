"""A presence webhook receiver: verifies each delivery with the Standard
Webhooks library, then prints its events. Run it beside the service:

    pip install standardwebhooks
    WEBHOOK_SECRET=whsec_... python3 examples/webhooks/receiver.py
"""
import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook

webhook = Webhook(os.environ["WEBHOOK_SECRET"])


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        try:
            delivery = webhook.verify(body, dict(self.headers))
        except Exception:
            self.send_response(401)  # not from presence: ignore it
            self.end_headers()
            return
        for event in delivery["data"]["events"]:
            # Ids are stable across retries: a receiver that must act once
            # keeps the ones it has seen.
            print(json.dumps(event), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(os.environ.get("PORT", "9000"))), Receiver).serve_forever()
