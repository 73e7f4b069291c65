from litho import lifecycle
from services.gateway._app import main

lifecycle.run(main)
