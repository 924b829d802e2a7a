"""Who really sent this mail: SPF, DKIM and DMARC (``authenticate``), and whether that sender
may act here (``authorize``); ``resolver`` is the DNS both use."""
