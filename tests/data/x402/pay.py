"""Pays an Outpost paid-chat route with the PyPI x402 client (v2), as any x402 user would.

Usage: pay.py URL MESSAGE. Signs offline with the throwaway key of the x402 contract's test
vector (32 x 0x11, never funded). Prints one JSON line: status, body and the decoded receipt.
"""

import asyncio
import base64
import json
import sys

from eth_account import Account
from x402 import x402Client
from x402.http.clients.httpx import x402HttpxClient
from x402.mechanisms.evm.exact.register import register_exact_evm_client


async def main(url: str, message: str) -> None:
    client = x402Client()
    register_exact_evm_client(client, Account.from_key("0x" + "11" * 32))
    async with x402HttpxClient(client, timeout=60) as http:
        response = await http.post(url, json={"message": message})
    receipt = response.headers.get("payment-response")
    print(
        json.dumps(
            {
                "status": response.status_code,
                "body": response.json(),
                "receipt": json.loads(base64.b64decode(receipt)) if receipt else None,
            }
        )
    )


asyncio.run(main(sys.argv[1], sys.argv[2]))
