"""A burst of 8 requests against a limit of 5 per second, then a wait for the next one."""

from ferrolimit import FakeClock, Limiter


def main(clock: FakeClock | None = None) -> list[bool]:
    limiter = Limiter("5/s;100/min", algorithm="gcra", clock=clock)
    outcomes = []
    for number in range(1, 9):
        decision = limiter.hit("client:203.0.113.7")
        outcomes.append(decision.allowed)
        status = "200 OK               " if decision.allowed else "429 Too Many Requests"
        print(
            f"request {number}: {status} limit={decision.limit} remaining={decision.remaining} "
            f"retry_after={decision.retry_after:.2f}s"
        )
    wait = limiter.peek("client:203.0.113.7").retry_after
    print(f"next request passes in {wait:.2f}s")
    return outcomes


if __name__ == "__main__":
    main()
