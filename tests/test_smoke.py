from tests.support import Api


async def test_two_users_chat_over_websocket(api: Api) -> None:
    alice, bob = await api.account("alice"), await api.account("bob")
    chat = await api.direct(alice, bob)
    wa, wb = await api.ws(alice), await api.ws(bob)
    cmid = await wa.send_message(chat, "hello bob")
    sent = await wa.next("sent")
    assert sent["client_msg_id"] == cmid and sent["message"]["seq"] == 1
    got = await wb.messages(1, chat)
    assert got[0]["text"] == "hello bob"
    own = await wa.messages(1, chat)
    assert own[0]["seq"] == 1
