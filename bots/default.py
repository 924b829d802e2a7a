"""The deployment ``mailbot serve`` runs when no ``--app`` is given."""

from bots.comments import CommentsBot
from bots.inspector import InspectorBot
from mailbot import Mailbot

# Comments first: the default bot of a conversation made without naming one. The inspector's
# temporary addresses live on inspect.<domain> (mailbot inspector new).
app = Mailbot(bots=[CommentsBot, InspectorBot])
