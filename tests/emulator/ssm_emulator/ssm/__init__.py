"""Emulated SSM operations: name -> (handler, exception used for request-validation failures)."""
from . import associations, automation, commands, compliance, instances, inventory, opsitems

V = "ValidationException"
HANDLERS = {
    "CreateOpsItem": (opsitems.create_ops_item, opsitems.INVALID),
    "UpdateOpsItem": (opsitems.update_ops_item, opsitems.INVALID),
    "GetOpsItem": (opsitems.get_ops_item, opsitems.INVALID),
    "DescribeOpsItems": (opsitems.describe_ops_items, opsitems.INVALID),
    "PutComplianceItems": (compliance.put_compliance_items, V),
    "ListComplianceItems": (compliance.list_compliance_items, V),
    "ListResourceComplianceSummaries": (compliance.list_resource_compliance_summaries, V),
    "ListComplianceSummaries": (compliance.list_compliance_summaries, V),
    "PutInventory": (inventory.put_inventory, V),
    "GetInventory": (inventory.get_inventory, V),
    "ListInventoryEntries": (inventory.list_inventory_entries, V),
    "GetInventorySchema": (inventory.get_inventory_schema, V),
    "StartAutomationExecution": (automation.start_automation_execution, V),
    "GetAutomationExecution": (automation.get_automation_execution, V),
    "DescribeAutomationExecutions": (automation.describe_automation_executions, V),
    "DescribeInstanceInformation": (instances.describe_instance_information, V),
    "GetCalendarState": (instances.get_calendar_state, V),
    "CreateAssociation": (associations.create_association, V),
    "ListAssociations": (associations.list_associations, V),
    "StartAssociationsOnce": (associations.start_associations_once, V),
    "SendCommand": (commands.send_command, V),
    "ListCommands": (commands.list_commands, V),
    "ListCommandInvocations": (commands.list_command_invocations, V),
    "GetCommandInvocation": (commands.get_command_invocation, V),
}
