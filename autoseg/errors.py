"""Exceptions that autoseg raises for problems in the user's input."""


class AutosegInputError(Exception):
    """A problem with user input (a file, a folder, an option).

    The message is one line that names the file (or option) and the problem; the
    command-line interface prints it and exits with status 1.
    """


class DatasetVerificationError(AutosegInputError):
    """The raw dataset failed verification; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        head = f"dataset verification found {len(self.problems)} problem(s)"
        super().__init__(head + ":\n" + "\n".join(self.problems))
