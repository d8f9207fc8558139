"""The study's web app: participants join by a link, answer one board per page, and come back to where they stopped.

Pages carry no speaker identity and no personal question. Every refused request (an unknown or someone else's
participant id, a board not shown, a pick off the board, a changed answer) gets its 4xx status and one line."""

from __future__ import annotations

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from listener_sub.study.store import StudyRefusal, StudyStore, WrongParticipant
from listener_sub.web.pages import page, refusal, secure

COOKIE = "participant"  # the participant id, so that the start page leads a returning browser back to its session


def create_study_app(store: StudyStore, title: str = "Which picture is it?") -> FastAPI:
    """The FastAPI app of a study whose materials `store` holds."""
    app = secure(FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None))

    def known(request: Request) -> str | None:
        pid = request.cookies.get(COOKIE)
        try:
            return store.participant(pid).id if pid else None
        except StudyRefusal:
            return None

    @app.exception_handler(StudyRefusal)
    async def refused(request: Request, error: StudyRefusal) -> HTMLResponse:
        return refusal(error.status, str(error))

    @app.get("/", response_class=HTMLResponse)
    def welcome(request: Request) -> HTMLResponse:
        trials = store.config.boards + store.config.attention_checks
        return page("study_welcome.html", title=title, returning=known(request), trials=trials, n=store.n_images)

    @app.post("/join")
    def join(request: Request) -> RedirectResponse:
        pid = known(request) or store.join().id
        response = RedirectResponse(f"/p/{pid}", status_code=303)
        response.set_cookie(COOKIE, pid, httponly=True, samesite="strict", max_age=30 * 24 * 3600)
        return response

    @app.get("/p/{pid}", response_class=HTMLResponse)
    def trial_page(pid: str) -> HTMLResponse:
        who = store.participant(pid)
        total = len(store.trials(who))
        shown = store.show(pid)
        if shown is None:
            return page("study_done.html", title=title, total=total)
        trial, view = shown
        return page(
            "study_trial.html",
            title=title,
            pid=pid,
            trial=trial.index,
            number=trial.index + 1,
            total=total,
            caption=view.caption,
            positions=range(view.n_images),
        )

    @app.post("/p/{pid}/answer")
    def answer(pid: str, participant: str = Form(...), trial: int = Form(...), pick: int = Form(...)) -> Response:
        if participant != pid:
            raise WrongParticipant(
                f"this answer names participant {participant!r} but was sent to another participant's page; "
                "answer from your own link"
            )
        store.answer(pid, trial, pick)
        return RedirectResponse(f"/p/{pid}", status_code=303)

    @app.get("/p/{pid}/t/{trial}/img/{position}.png")
    def image(pid: str, trial: int, position: int) -> Response:
        shown = store.shown_trial(pid, trial)
        view = store.view(shown)
        png = store.image(shown.kind, shown.board, position, view.perception)
        if png is None:
            raise HTTPException(
                404, f"trial {trial} has no image {position}; its board has positions 0..{view.n_images - 1}"
            )
        return Response(png, media_type="image/png")

    return app
