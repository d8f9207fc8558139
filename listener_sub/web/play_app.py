"""The play app: a person plays the game as a listener (sees a board through a chosen perception and a speaker's
caption, picks, then sees the target and the model listeners' picks) or as the speaker (writes a caption for the
framed target; every model listener reads it through its own perception; the reward, the trained speaker's and the
oracle's play of the same board, and the player's running score)."""

from __future__ import annotations

import secrets
import unicodedata

from fastapi import FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from listener_sub.web.pages import page, secure
from listener_sub.web.table import PERSON, PlayTable
from listener_sub.web.turns import LISTENER, SPEAKER, Turn, TurnStore

COOKIE = "player"  # a random id that keeps a player's score; nothing else about them is kept
MAX_CAPTION = 200  # characters


def check_caption(text: str) -> str:
    """A caption a person typed, trimmed; HTTPException 422 when empty, too long or holding control characters."""
    text = " ".join(text.split())
    if not text:
        raise HTTPException(422, "caption: write a few words about the framed picture")
    if len(text) > MAX_CAPTION:
        raise HTTPException(422, f"caption: {len(text)} characters; keep it under {MAX_CAPTION}")
    if any(unicodedata.category(ch).startswith("C") for ch in text):
        raise HTTPException(422, "caption: holds control characters; type plain text")
    return text


def create_play_app(table: PlayTable, turns: TurnStore, title: str = "listener-sub: play the game") -> FastAPI:
    """The FastAPI app of `listener-sub play` over precomputed boards (`table`) and a store of the turns played."""
    app = secure(FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None))
    game, n_boards = table.game, len(table.boards)
    listeners = {name: (game.role(name), table.views[f"as-{name}"][0]) for name in game.listeners}

    def player_of(request: Request) -> str:
        return request.cookies.get(COOKIE) or request.state.new_player

    @app.middleware("http")
    async def player_cookie(request: Request, call_next):  # noqa: ANN001, ANN202 (Starlette's middleware signature)
        request.state.new_player = secrets.token_urlsafe(12)
        response = await call_next(request)
        if COOKIE not in request.cookies:
            response.set_cookie(COOKIE, request.state.new_player, httponly=True, samesite="strict", max_age=30 * 86400)
        return response

    def board_checked(board: int) -> int:
        if not 0 <= board < n_boards:
            raise HTTPException(404, f"board={board} does not exist; boards are numbered 0..{n_boards - 1}")
        return board

    def view_checked(view: str) -> str:
        if view not in table.views:
            raise HTTPException(422, f"view={view!r} is not a perception here; choose one of {', '.join(table.views)}")
        return view

    def speaker_checked(speaker: str) -> str:
        if speaker not in [*table.speakers, PERSON]:
            raise HTTPException(
                422, f"speaker={speaker!r} is unknown; choose one of {', '.join(table.speakers)}, person"
            )
        return speaker

    def turn_checked(turn_id: int, role: str) -> Turn:
        turn = turns.get(turn_id)
        if turn is None or turn.role != role:
            raise HTTPException(404, f"turn {turn_id} is not a {role} turn played here")
        return turn

    def common(request: Request) -> dict:
        return {"title": title, "score": turns.score(player_of(request)), "n_boards": n_boards}

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> HTMLResponse:
        return page("play_index.html", **common(request), speakers=[*table.speakers, PERSON], views=table.views)

    @app.get("/listener", response_class=HTMLResponse)
    def listener_page(
        request: Request, speaker: str | None = None, view: str = "full", board: int = 0, turn: int | None = None
    ) -> Response:
        speaker = speaker_checked(speaker or ("trained" if "trained" in table.speakers else table.speakers[0]))
        view_checked(view)
        if speaker == PERSON:
            written = turns.get(turn) if turn is not None else turns.latest_caption(not_by=player_of(request))
            if written is None or written.role != SPEAKER:
                if turn is not None:
                    raise HTTPException(404, f"turn={turn} is not a caption a person wrote")
                return page("play_none.html", **common(request))
            board, caption, turn = written.board, written.caption, written.id
        else:
            caption = table.plays[speaker][board_checked(board)]["caption"]
        return page(
            "play_listener.html",
            **common(request),
            board=board,
            speaker=speaker,
            view=view,
            view_label=table.views[view][0],
            turn=turn,
            caption=caption,
            positions=range(game.n_images),
        )

    @app.post("/listener")
    def listener_answer(
        request: Request,
        board: int = Form(...),
        speaker: str = Form(...),
        view: str = Form(...),
        pick: int = Form(...),
        turn: int | None = Form(None),
    ) -> RedirectResponse:
        board_checked(board), speaker_checked(speaker), view_checked(view)
        if not 0 <= pick < game.n_images:
            raise HTTPException(422, f"pick={pick} is not on the board; pick a position from 0 to {game.n_images - 1}")
        if speaker == PERSON:
            written = turns.get(turn) if turn is not None else None
            if written is None or written.role != SPEAKER or written.board != board:
                raise HTTPException(422, "turn: name the person's caption this board was shown with")
            caption, outcome = written.caption, written.outcome
        else:
            caption, outcome = table.plays[speaker][board]["caption"], table.plays[speaker][board]
        correct = pick == table.target(board)
        played = Turn(
            0, player_of(request), LISTENER, board, speaker, view, caption, pick, correct, None, None, outcome
        )
        return RedirectResponse(f"/listener/turn/{turns.add(played)}", status_code=303)

    @app.get("/listener/turn/{turn_id}", response_class=HTMLResponse)
    def listener_result(request: Request, turn_id: int) -> HTMLResponse:
        turn = turn_checked(turn_id, LISTENER)
        target = table.target(turn.board)
        return page(
            "play_listener_result.html",
            **common(request),
            turn=turn,
            target=target,
            positions=range(game.n_images),
            listeners=listeners,
            next_board=(turn.board + 1) % n_boards,
        )

    @app.get("/speaker", response_class=HTMLResponse)
    def speaker_page(request: Request, board: int = 0) -> HTMLResponse:
        board_checked(board)
        return page(
            "play_speaker.html",
            **common(request),
            board=board,
            target=table.target(board),
            positions=range(game.n_images),
            max_caption=MAX_CAPTION,
        )

    @app.post("/speaker")
    def speaker_caption(request: Request, board: int = Form(...), caption: str = Form(...)) -> RedirectResponse:
        board_checked(board)
        caption = check_caption(caption)
        row = table.play(caption, board)
        played = Turn(0, player_of(request), SPEAKER, board, PERSON, "full", caption, None, None, row["reward"],
                      row["won"], row)  # fmt: skip
        return RedirectResponse(f"/speaker/turn/{turns.add(played)}", status_code=303)

    @app.get("/speaker/turn/{turn_id}", response_class=HTMLResponse)
    def speaker_result(request: Request, turn_id: int) -> HTMLResponse:
        turn = turn_checked(turn_id, SPEAKER)
        others = {name: plays[turn.board] for name, plays in table.plays.items() if name != "base"}
        return page(
            "play_speaker_result.html",
            **common(request),
            turn=turn,
            target=table.target(turn.board),
            positions=range(game.n_images),
            listeners=listeners,
            others=others,
            next_board=(turn.board + 1) % n_boards,
        )

    @app.get("/img/{board}/{position}.png")
    def image(board: int, position: int, view: str = Query("full")) -> Response:
        board_checked(board), view_checked(view)
        if not 0 <= position < game.n_images:
            raise HTTPException(404, f"position={position} is not on the board (0..{game.n_images - 1})")
        return Response(table.image(board, position, view), media_type="image/png")

    return app
