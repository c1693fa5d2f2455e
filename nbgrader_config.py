"""nbgrader configuration for the course kit.

`nbgrader generate_assignment Assignment2-1` (run from this folder) turns source/ into release/.
`make release` does that and copies the handout to the repository root.
"""
c = get_config()  # noqa: F821 (nbgrader injects get_config)

c.CourseDirectory.course_id = "M2177.004300"
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
# The database is a by-product of generate_assignment; keep it out of the repository root.
c.CourseDirectory.db_url = "sqlite:////tmp/nbgrader-transformer-course.db"

# What students see in place of each ### BEGIN/END SOLUTION region. The TO DO banners around the
# region stay, so the stub sits right where their code goes.
c.ClearSolutions.code_stub = {
    "python": '# YOUR CODE HERE\n'
              'raise NotImplementedError("TO DO: replace this line with your code (see the instructions above)")'
}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Students must see every given line, and the release is what the grader's tamper check compares against.
c.ClearHiddenTests.enforce_metadata = True

# nbgrader's default 30 s per cell would cut the full training run short in `validate` and `autograde`.
c.Execute.timeout = 3600
