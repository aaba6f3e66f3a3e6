"""AWX's error answers: DRF bodies, ``{"detail": "..."}`` or ``{"field": ["message", ...]}``."""

NOT_AUTHENTICATED = ("Authentication credentials were not provided."
                     " To establish a login session, visit /api/login/.")
PERMISSION_DENIED = "You do not have permission to perform this action."
NOT_FOUND = "Not found."


class ApiError(Exception):
    """An HTTP error with its JSON body."""

    def __init__(self, status: int, body):
        super().__init__(status, body)
        self.status = status
        self.body = body


def detail(status: int, message: str) -> ApiError:
    """``{"detail": message}``, DRF's shape for 401, 403, 404, 405."""
    return ApiError(status, {"detail": message})


def fields(errors: dict) -> ApiError:
    """A 400 with per-field lists of messages."""
    return ApiError(400, {key: list(value) for key, value in errors.items()})
